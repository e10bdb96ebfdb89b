"""An unchanged resubmission through the system (skipped after a manifest HEAD) vs the raw CLI's cached
rebuild-and-push of the same Dockerfile; first, what `imagebuilder submit` imports at start-up (python -X
importtime). Prints the median ratio last."""

import os
import re
import subprocess
import sys

from bench.harness import bench, report

HEAVY = ("docker", "fastapi", "uvicorn", "starlette", "jinja2")

RUNS = int(os.environ.get("BENCH_RUNS", "10"))


def cli_start_up() -> str:
    """The CLI module's cumulative import time, and which heavy modules it pulls in (none, it should be)."""
    probe = "import sys, producer.cli; print(' '.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], capture_output=True, text=True,
                          check=True)
    cumulative_us = int(re.search(r"\|\s*(\d+) \| producer\.cli$", done.stderr, re.M)[1])
    return (f"CLI start-up: importing producer.cli takes {cumulative_us / 1000:.0f} ms; heavy modules imported: "
            f"{done.stdout.strip() or 'none'} (of {', '.join(HEAVY)})")


def main() -> None:
    print(cli_start_up())
    with bench() as b:
        report("unchanged resubmission", b.versus_raw("bench-resubmit", force=False, runs=RUNS))


if __name__ == "__main__":
    main()
