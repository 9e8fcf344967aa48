#!/usr/bin/env bash
# Run the numbered notebooks in order with papermill; stop loudly on the first failure.
#
#   ./run_all.sh                                   # the whole suite on the SYNTHETIC demo set
#   ./run_all.sh --dataset ham10000 --data-dir ../shared/data --profile cpu --run ham-cpu
#   ./run_all.sh --only 01-03 -p max_images 300    # a subset, any notebook parameter
#   ./run_all.sh --run ham-cpu --resume ...         # continue a stopped run (same options)
#   ./run_all.sh --list-params 07                   # parameters, defaults and their help
#   ./run_all.sh --help
#
# Each notebook's output streams to the terminal and to runs/<run>/logs/<notebook>.log.
# Executed notebooks, artifacts, run.json (parameters, versions, git commit, how each
# notebook ended) and the HTML report go to runs/<run>/, figures to figures/<dataset>/.
# The kernels run this environment's Python whatever kernel the notebooks name.
# The environment (.venv) is created on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=$(bash scripts/setup_env.sh)
export SKINHELPERS_PROGRESS=${SKINHELPERS_PROGRESS:-plain}
# what the user typed, for the run's record (run.json, the report)
SKINHELPERS_COMMAND="./run_all.sh$(printf ' %q' "$@")"
export SKINHELPERS_COMMAND
exec "$PY" -m skinhelpers.run.pipeline "$@"
