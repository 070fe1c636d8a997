"""What the trial forkserver loads once for every trial it forks (see mt5study.trial_process).

Imported only by that server: the modules a trial imports, and the caches a trial would
otherwise build each time (transformers' table of checkpoint renamings, built on the first
save_pretrained: 2.3 s of a 14 s `ladder-1` trial here). Pure Python state, no thread started
and no kernel run, so forking after it is safe.
"""

from __future__ import annotations

import accelerate  # noqa: F401
import deepspeed  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import conversion_mapping

import mt5study.cli  # noqa: F401
import mt5study.train  # noqa: F401

conversion_mapping.get_checkpoint_conversion_mapping("mt5")
