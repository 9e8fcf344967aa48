"""What a run ran on: library versions, accelerator and the code's git state (for run.json).

The torch facts come from a short subprocess of the same Python the kernels use, so the
pipeline process itself never initialises CUDA.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from skinhelpers.files import PROJECT_ROOT

log = logging.getLogger(__name__)

PACKAGES = ("torch", "torchvision", "timm", "numpy", "papermill", "ipykernel")

_TORCH_PROBE = """
import json, torch
d = {"cuda": torch.version.cuda, "cudnn": None, "gpus": []}
if torch.cuda.is_available():
    d["cudnn"] = torch.backends.cudnn.version()
    d["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(json.dumps(d))
"""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str, cwd: Path = PROJECT_ROOT) -> str | None:
    try:
        p = subprocess.run(
            ["git", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.rstrip() if p.returncode == 0 else None


def git_state(cwd: Path = PROJECT_ROOT) -> dict:
    """``{"commit", "dirty", "changed"}``: tracked files that differ from the commit."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    commit = commit.strip() if commit else None
    if commit is None:
        return {"commit": None, "dirty": None, "note": f"{cwd} is not a git checkout"}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd) or ""
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:30]}


def accelerator(timeout_s: float = 180.0) -> dict:
    """CUDA / cuDNN versions and GPU names as this Python's torch sees them; when the probe
    fails (or outlasts ``timeout_s`` on a loaded machine) the keys are there, None, with
    the ``error``."""
    try:
        p = subprocess.run(
            [sys.executable, "-c", _TORCH_PROBE],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if p.returncode == 0:
            return json.loads(p.stdout.strip().splitlines()[-1])
        error = (p.stderr.strip().splitlines() or ["torch probe failed"])[-1]
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        error = f"torch probe failed: {e}"
    log.warning(f"note: CUDA and GPUs not recorded: {error}")
    return {"cuda": None, "cudnn": None, "gpus": None, "error": error}


def environment() -> dict:
    """Everything above in one dict (what run.json stores under ``environment``)."""
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        **accelerator(),
        "git": git_state(),
    }
