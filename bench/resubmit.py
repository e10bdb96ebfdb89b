"""An unchanged resubmission through the system (skipped after a manifest HEAD) vs the raw CLI's cached
rebuild-and-push of the same Dockerfile; prints the median ratio last."""

import os

from bench.harness import bench, report

RUNS = int(os.environ.get("BENCH_RUNS", "10"))


def main() -> None:
    with bench() as b:
        report("unchanged resubmission", b.versus_raw("bench-resubmit", force=False, runs=RUNS))


if __name__ == "__main__":
    main()
