"""The scaling study's model ladder: CPU-trainable members of mT5's family made by one shape rule.

A leaf module (no imports from the package) so that both `config` (which validates preset names)
and `model` (which builds them) can read it. Filled in by the scaling study (issue 11); each entry
has the keys of `mt5study.model.PRESETS`.
"""

from __future__ import annotations

LADDER: dict[str, dict[str, int]] = {}
