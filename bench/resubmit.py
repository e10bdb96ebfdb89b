"""An unchanged resubmission through the system (skipped after a manifest HEAD) vs the raw CLI's cached
rebuild-and-push of the same Dockerfile; prints the median ratio last."""

import os

from bench.harness import alternate, bench, report
from worker.spec import parse_spec

RUNS = int(os.environ.get("BENCH_RUNS", "10"))


def main() -> None:
    with bench() as b:
        spec = parse_spec({"name": "bench-resubmit", "baseImage": b.stack.debian_base, "pullSecret": "private",
                           "packages": {"apt": ["jq"]}})
        context = b.context_dir(spec)
        raw_target = f"{b.stack.push_registry.host}/raw/bench-resubmit:latest"
        b.build(spec, force=False)  # both sides start from an image that is already built and pushed
        b.raw.pull_build_push(b.stack.debian_base, context, raw_target, nocache=False)
        pairs = alternate(
            lambda: b.build(spec, force=False),
            lambda: b.raw.pull_build_push(b.stack.debian_base, context, raw_target, nocache=False),
            RUNS,
        )
        report("unchanged resubmission", pairs)


if __name__ == "__main__":
    main()
