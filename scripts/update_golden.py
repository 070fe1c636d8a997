"""Regenerate tests/assets/golden_tiny_zero3.json from a fresh pulse run (params/cpu/tiny.yaml).

Run it only when a change to training is intended, and say why in the commit.
"""

import json
import sys
import tempfile
from pathlib import Path

from mt5study import launch, records
from mt5study.paths import PARAMS, ROOT

with tempfile.TemporaryDirectory() as tmp:
    summary = launch.run(PARAMS / "cpu" / "tiny.yaml", Path(tmp) / "run")
    if summary["status"] != "completed":
        sys.exit(f"pulse run ended {summary['status']}")
    rows = records.read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    env = records.read_json(Path(tmp) / "run" / "env.json")
golden = {
    "params": "params/cpu/tiny.yaml",
    "losses": [r["loss"] for r in rows],
    # fp32 on CPU: different SIMD kernels (AVX2 vs AVX-512) reorder sums slightly
    "rel_tolerance": 1e-3,
    "made_with": {k: env["versions"][k] for k in ("torch", "transformers", "deepspeed", "accelerate")},
    "cpu": env["hardware"].get("cpu"),
}
out = ROOT / "tests" / "assets" / "golden_tiny_zero3.json"
out.write_text(json.dumps(golden, indent=2) + "\n")
print(f"wrote {out}: {golden['losses']}")
