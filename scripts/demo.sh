#!/usr/bin/env bash
# The main job end to end on a local default: Redis, a local registry and a worker (started if not running)
# build examples/demo.yaml and push it to the local registry. `scripts/demo.sh down` stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m devstack.demo "$@"
