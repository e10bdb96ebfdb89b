#!/usr/bin/env bash
# The whole test suite. Installs what it needs; the test session starts dockerd, Redis and two registries itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/pytest --durations=15 "$@"
