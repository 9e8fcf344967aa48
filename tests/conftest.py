"""Shared fixtures: the real data in ../shared/data (read-only) and a small demo set."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKINLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        msg = f"real data not found at {path} (set SKINLAB_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # in CI the data must be there: never skip silently
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def ham_dir(shared_data) -> Path:
    return _need(shared_data / "ham10000")


@pytest.fixture(scope="session")
def isic9_dir(shared_data) -> Path:
    return _need(shared_data / "isic-9class")


@pytest.fixture(scope="session")
def ham_manifest(ham_dir):
    from skinhelpers.data.manifest import load_manifest

    return load_manifest("ham10000", ham_dir)


@pytest.fixture(scope="session")
def isic9_manifest(isic9_dir):
    from skinhelpers.data.manifest import load_manifest

    return load_manifest("isic9", isic9_dir)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from skinhelpers.data.synthetic import ensure_demo

    return ensure_demo(tmp_path_factory.mktemp("demo") / "seed0", seed=0)


@pytest.fixture(scope="session")
def demo_manifest(demo_dir):
    from skinhelpers.data.manifest import load_manifest

    return load_manifest("demo", demo_dir)
