"""`python -m mt5study.slurm submit|submit-study|train|status ...`."""

import sys

from mt5study.slurm.cli import main

sys.exit(main())
