"""One spec built cold (--force, no layer cache) through the whole system vs the same Dockerfile with the raw
`docker pull`/`build --no-cache`/`push` CLI, alternating runs; prints the median ratio last."""

import os

from bench.harness import bench, report

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def main() -> None:
    with bench() as b:
        report("cold build", b.versus_raw("bench-cold", force=True, runs=RUNS))


if __name__ == "__main__":
    main()
