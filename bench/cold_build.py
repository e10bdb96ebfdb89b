"""One spec built cold (--force, no layer cache) through the whole system vs the same Dockerfile with the raw
`docker pull`/`build --no-cache`/`push` CLI, alternating runs; prints the median ratio last."""

import os

from bench.harness import bench, report, timed
from worker.spec import parse_spec

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def main() -> None:
    with bench() as b:
        spec = parse_spec({"name": "bench-cold", "baseImage": b.stack.debian_base, "pullSecret": "private",
                           "packages": {"apt": ["jq"]}})
        context = b.context_dir(spec)
        raw_target = f"{b.stack.push_registry.host}/raw/bench-cold:latest"
        pairs = []
        for _ in range(RUNS):
            system = b.build(spec, force=True)
            raw = timed(lambda: b.raw.pull_build_push(b.stack.debian_base, context, raw_target, nocache=True))
            pairs.append((system, raw))
        report("cold build", pairs)


if __name__ == "__main__":
    main()
