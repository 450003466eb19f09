"""``python -m mscalednn`` is the ``mscale`` command (and what torchrun starts:
``torchrun --nproc-per-node 2 -m mscalednn solve FILE``)."""

import sys

from .cli import main

sys.exit(main())
