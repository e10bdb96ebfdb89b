"""The same spec submitted 20 times at once: how many builds actually ran (must be 1), and the time until all
20 submissions have their result, against one build of the same spec alone; prints the ratio last."""

import concurrent.futures
import os
import time

from bench.harness import bench
from core.spec import parse_spec

SUBMISSIONS = int(os.environ.get("BENCH_SUBMISSIONS", "20"))


def main() -> None:
    with bench() as b:
        def spec(name):
            return parse_spec({"name": name, "baseImage": b.stack.debian_base, "pullSecret": "private",
                               "packages": {"apt": ["jq"]}})

        b.build(spec("bench-warmup"), force=True)  # not counted: the first pull of the base image
        alone_s = b.build(spec("bench-alone"), force=True)
        concurrent_spec = spec("bench-dedup")
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(SUBMISSIONS) as pool:
            ids = list(pool.map(lambda _: b.client.submit(concurrent_spec, force=True).id, range(SUBMISSIONS)))
            results = list(pool.map(lambda build_id: b.client.wait(build_id, timeout_s=1800), ids))
        all_done_s = time.perf_counter() - start
        builds_run = len({r.id for r in results if r.started_at is not None})
        assert all(r.succeeded for r in results), [r.error for r in results if not r.succeeded]
        print(f"{SUBMISSIONS} concurrent submissions -> {len(set(ids))} build id(s), {builds_run} build(s) run")
        print(f"one build alone {alone_s:.2f} s; all {SUBMISSIONS} complete after {all_done_s:.2f} s")
        print(f"dedup: builds run {builds_run}, time to all-complete / one build alone = {all_done_s / alone_s:.2f}")


if __name__ == "__main__":
    main()
