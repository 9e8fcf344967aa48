#!/usr/bin/env bash
# Run the numbered notebooks in order with papermill; stop loudly on the first failure.
#
#   ./run_all.sh                                   # the whole suite on the SYNTHETIC demo set
#   ./run_all.sh --dataset ham10000 --data-dir ../shared/data --profile cpu --run ham-cpu
#   ./run_all.sh --only 01-03 -p max_images 300    # a subset, any notebook parameter
#   ./run_all.sh --help
#
# Executed notebooks, artifacts, parameters and the HTML report go to runs/<run>/,
# figures to figures/<dataset>/. The environment (.venv) is created on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=$(bash scripts/setup_env.sh)
export SKINHELPERS_PROGRESS=${SKINHELPERS_PROGRESS:-plain}
exec "$PY" -m skinhelpers.run.pipeline "$@"
