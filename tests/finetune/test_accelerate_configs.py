"""configs/accelerate/*.yaml load as accelerate configs (unknown keys would raise) and carry their launch line."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize("name,kind", [("ddp", DistributedType.MULTI_GPU), ("fsdp", DistributedType.FSDP)])
def test_accelerate_configs_load_and_start_with_their_launch_command(name: str, kind: DistributedType) -> None:
    path = CONFIGS / f"{name}.yaml"
    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.distributed_type == kind and cfg.num_processes >= 2 and not cfg.use_cpu
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# Launch: accelerate launch --config_file configs/accelerate/{name}.yaml -m dlsearch.finetune")
    if name == "fsdp":
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # stage dirs stay plain HF dirs
