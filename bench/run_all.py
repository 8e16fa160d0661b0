"""Runs every benchmark in this folder in turn, each in its own interpreter, and stops at none of them failing.

Each bench prints its own table with targets and PASS/FAIL; this only sequences them (`make bench`).
Pass names to run a subset: `python bench/run_all.py vision audio`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ARGS = {"bench_events.py": ["--outage-s", "60"]}
"""Shorter runs than a bench's own defaults: bench_events defaults to the issue's 5-minute outage; 60 s here."""


def main(argv: list[str]) -> int:
    benches = sorted(HERE.glob("bench_*.py"))
    if argv:
        benches = [b for b in benches if any(name in b.stem for name in argv)]
    failed = []
    for bench in benches:
        print(f"\n===== {bench.name} =====", flush=True)
        if subprocess.run([sys.executable, str(bench), *ARGS.get(bench.name, [])], check=False).returncode != 0:
            failed.append(bench.name)
    if failed:
        print(f"\nbenches that exited non-zero: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
