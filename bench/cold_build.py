"""One spec built cold (--force, no layer cache) through the whole system vs the same Dockerfile with the raw
`docker pull`/`build --no-cache`/`push` CLI, alternating runs; prints the median ratio last."""

import os

from bench.harness import alternate, bench, report
from worker.spec import parse_spec

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def main() -> None:
    with bench() as b:
        spec = parse_spec({"name": "bench-cold", "baseImage": b.stack.debian_base, "pullSecret": "private",
                           "packages": {"apt": ["jq"]}})
        context = b.context_dir(spec)
        raw_target = f"{b.stack.push_registry.host}/raw/bench-cold:latest"
        b.build(spec, force=True)  # warm-up, not counted: the first pull of the base image
        pairs = alternate(
            lambda: b.build(spec, force=True),
            lambda: b.raw.pull_build_push(b.stack.debian_base, context, raw_target, nocache=True),
            RUNS,
        )
        report("cold build", pairs)


if __name__ == "__main__":
    main()
