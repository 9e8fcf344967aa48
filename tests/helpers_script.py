"""A script (a benchmark) run as ``python script.py ARGS`` would run it, but in this test
process: its imports (torch, scikit-learn, ...: 2-3 s per new interpreter on 2 cores) are
already loaded.

What a new interpreter would give the script, it gets: ``__name__ == "__main__"``, its
folder first on ``sys.path``, ``sys.argv``, the environment and working folder asked for,
and modules of its own folder imported afresh (``common`` reads its environment at import).
Its exit status is what ``sys.exit`` said (an uncaught exception: 1, traceback on stderr);
its stdout and stderr are returned as a ``subprocess.CompletedProcess``'s. Afterwards the
environment, working folder, ``sys.argv``, ``sys.path``, the ``skinhelpers`` log level and
torch's thread count are put back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path


def run_script(script: Path, *args: str, env: dict | None = None, cwd=None):
    script = Path(script).resolve()
    folder = script.parent
    own = {p.stem for p in folder.glob("*.py")}
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_argv, saved_path = list(sys.argv), list(sys.path)
    lib_log = logging.getLogger("skinhelpers")
    saved_level = lib_log.level
    import torch  # loaded anyway by the scripts; its thread count is put back

    threads = torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = [str(script), *map(str, args)]
        sys.path.insert(0, str(folder))
        for name in own & set(sys.modules):  # e.g. common: read afresh, as a new process
            del sys.modules[name]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 - as a new interpreter would report it
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv[:], sys.path[:] = saved_argv, saved_path
        for name in own & set(sys.modules):
            del sys.modules[name]
        lib_log.setLevel(saved_level)
        torch.set_num_threads(threads)
    argv = [sys.executable, str(script), *map(str, args)]
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
