"""Fine-tune on ReDial's TRAIN dialogues of a prepared split (conversation->concepts / ->query), split-checked.

    python bench/finetune_redial_concepts.py --config configs/finetune-redial-concepts-cpu.yaml --data runs/redial

`dlsearch finetune` with `data.dataset: redial` re-splits all loaded dialogues, which differs from
`dlsearch data prepare`'s split (prepare splits only dialogues that have recommender turns). This reuses the
quickstart's finetune step, which passes prepare's dialogue list and refuses a split that differs from the prepared
one (no test dialogue is trained on). Prints a JSON summary (wall time, load).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/finetune-redial-concepts-cpu.yaml")
    ap.add_argument("--data", default="runs/redial", help="dir written by `dlsearch data prepare --dataset redial`")
    ap.add_argument("--out", default=None, help="model output dir (default: the recipe's output_dir)")
    args = ap.parse_args()
    import yaml

    from dlsearch.data.redial import load_redial
    from dlsearch.app.quickstart import QuickstartConfig, finetune

    out = Path(args.out or yaml.safe_load(Path(args.config).read_text())["output_dir"])
    load0, t0 = os.getloadavg(), time.perf_counter()
    _, dialogues = load_redial()
    info = finetune(Path(args.data), out, dialogues, QuickstartConfig(recipe=args.config, seed=0))
    print(json.dumps({"bench": "finetune_redial_concepts", "config": args.config, "data": args.data, **info,
                      "wall_s": round(time.perf_counter() - t0, 1), "load_start": load0, "load_end": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
