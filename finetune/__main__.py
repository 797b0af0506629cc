"""`accelerate launch -m dlsearch.finetune --config configs/<recipe>.yaml [--set key=value ...] [--resume]`

Same entry as `dlsearch finetune`; also `python -m dlsearch.finetune` and `torchrun --nproc_per_node 2 -m dlsearch.finetune ...`.
"""

from dlsearch.finetune.cli import main

raise SystemExit(main())
