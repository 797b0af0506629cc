"""`accelerate launch -m finetune --config configs/<recipe>.yaml [--set key=value ...] [--resume]`

Same entry as `dlsearch finetune`; also `python -m finetune` and `torchrun --nproc_per_node 2 -m finetune ...`.
"""

from finetune.cli import main

raise SystemExit(main())
