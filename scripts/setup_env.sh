#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv, then print its python.
# Used by run_all.sh and run_tests.sh; safe to run again: it only reinstalls when
# pyproject.toml changed. Needs python3 >= 3.10 and pip; everything else comes from PyPI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${SKINLAB_VENV:-.venv}
PY=${PYTHON:-python3}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: need python3 >= 3.10 (found: $("$PY" --version 2>&1 || echo none))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV ..." >&2
  "$PY" -m venv "$VENV"
fi
install_with_uv() {
  local cfg args opts=() envs=() a
  "$VENV/bin/python" -m pip install uv || return 1
  cfg=$("$VENV/bin/python" -m pip config list) || return 1
  # pip's settings as uv options; without them uv would not see pip's wheel folders,
  # indexes or constraints, so a failure here means pip installs instead
  args=$(printf '%s\n' "$cfg" | "$VENV/bin/python" scripts/uv_args.py) || return 1
  while IFS= read -r a; do
    case $a in SSL_CERT_FILE=*) envs+=("$a") ;; ?*) opts+=("$a") ;; esac
  done <<< "$args"
  echo "uv pip install ${opts[*]}"
  env "${envs[@]}" "$VENV/bin/uv" pip install --python "$VENV/bin/python" "${opts[@]}" \
    -e ".[notebooks,dev,share]"
}
stamp="$VENV/.skinlesion-lab-installed"
want=$(cat pyproject.toml | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing dependencies into $VENV (first time: about a minute with uv, a few with pip; ~6 GB with CUDA torch) ..." >&2
  log="$VENV/pip-install.log"
  # torch and torchvision resolve together in one command (matching builds). uv (from PyPI,
  # into the venv) installs what pip would, with pip's indexes, wheel folders and
  # constraints (scripts/uv_args.py), and unpacks in parallel: ~30 s instead of ~90 s for
  # the ~6 GB here. Where uv cannot be had or fails, pip does it. SKINLAB_INSTALLER=pip: pip.
  if ! { [ "${SKINLAB_INSTALLER:-uv}" = uv ] && install_with_uv; } > "$log" 2>&1; then
    [ "${SKINLAB_INSTALLER:-uv}" = uv ] && echo "setup: uv did not install (see $log); pip instead ..." >&2
    if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
           "$VENV/bin/python" -m pip install -e ".[notebooks,dev,share]"; } >> "$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "setup: pip install failed; the full log is $log" >&2
      exit 1
    fi
  fi
  if ! "$VENV/bin/python" -c 'import torch, torchvision, timm, cv2' >&2; then
    echo "setup: torch/torchvision do not import. They must come from one pip command with" >&2
    echo "       matching versions: $VENV/bin/pip install --force-reinstall torch torchvision" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
# Byte-compile the package: where PYTHONDONTWRITEBYTECODE is set (as on some CI machines)
# Python never writes .pyc files, and every kernel and script would compile skinhelpers
# again (0.3 s a process). Only changed files are compiled; stale ones are never used.
"$VENV/bin/python" -m compileall -q skinhelpers >&2 || true
# Notebooks are committed without outputs: the nbstripout git filter (and a diff driver
# that compares notebooks without their outputs), in this clone's git config. The command
# is relative to the top of the work tree, where git runs filters, so no absolute path of
# this machine goes into .git/config and every clone or worktree uses its own .venv. The
# extra keys match the nbstripout hook in .pre-commit-config.yaml.
if [ -e .git ]; then
  strip="\"$VENV/bin/python\" -m nbstripout"
  git config --local filter.nbstripout.clean "$strip"
  git config --local filter.nbstripout.smudge cat
  git config --local filter.nbstripout.required true
  keys=(metadata.language_info.version metadata.language_info.codemirror_mode
        metadata.language_info.file_extension metadata.language_info.mimetype
        metadata.language_info.nbconvert_exporter metadata.language_info.pygments_lexer
        metadata.papermill cell.metadata.papermill metadata.toc metadata.vscode
        cell.metadata.pycharm)
  git config --local filter.nbstripout.extrakeys "${keys[*]}"
  git config --local diff.ipynb.textconv "$strip -t"
fi
echo "$VENV/bin/python"
