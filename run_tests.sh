#!/usr/bin/env bash
# Run the test suite (what CI runs). Creates .venv on first use. Extra arguments go to
# pytest, e.g. ./run_tests.sh -k cache -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=$(bash scripts/setup_env.sh)
export SKINHELPERS_PROGRESS=${SKINHELPERS_PROGRESS:-plain}
exec "$PY" -m pytest "$@"
