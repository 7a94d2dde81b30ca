"""Run every benchmark in sequence, each as `python -m benchmarks.<name>` from the repo root.

    .venv/bin/python benchmarks/run_all.py              # all
    .venv/bin/python benchmarks/run_all.py drift_speed  # some

The numbers, the machine and the commands are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = {
    "foundation_bench": [],
    "training_bench": [],
    "drift_speed": [],
    "monitoring_speed": [],
    "drift_detection": [],
    "estimate_bench": [],
    "prod_bench": [],
    "image_ingest_memory": [],
    "encoder_variants": [],
    "scaling": ["--dask"],
}


def main(names: list[str]) -> int:
    failed = []
    for name in names or list(BENCHMARKS):
        print(f"\n===== {name} =====", flush=True)
        code = subprocess.call(
            [sys.executable, "-m", f"benchmarks.{name}", *BENCHMARKS[name]], cwd=ROOT
        )
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
