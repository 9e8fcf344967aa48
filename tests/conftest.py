"""Shared fixtures: the real data in ../shared/data (read-only) and a small demo set.

Every test that uses a real-data fixture (``shared_data``, ``ham_dir``, ``isic9_dir``,
``ham_manifest``, ``isic9_manifest``, directly or through another fixture) is marked
``realdata`` here, so ``./run_tests.sh -m "not realdata"`` is the complete offline suite.
A test that is *not* marked ``realdata`` and still opens or lists a file under the real
data folder fails (an audit hook watches ``open``/``listdir``/``scandir``): the marker
cannot silently go missing. ``SKINLAB_SHARED_DATA`` points the fixtures elsewhere (a
folder that does not exist: every real-data test skips, or fails under ``CI``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from skinhelpers.files import DEFAULT_SHARED_DATA, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, give each worker its share of the cores (OpenMP, MKL, OpenCV).

    torch and OpenCV size their thread pools to every core of the machine. Two workers on
    two cores would then run four busy-waiting OpenMP threads that take turns with each
    other, and everything slows several-fold. The variables are inherited by what a test
    starts (papermill kernels, benchmark scripts, torchrun), so they cap those too. A
    value already set by the user is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2:
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        os.environ.setdefault(var, threads)
    if "torch" in sys.modules:  # imported before this file: its pool is already sized
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores_between_workers()
pytest_plugins = ["pytester"]  # tests/test_realdata_guard.py
REAL_DATA_FIXTURES = {"shared_data", "ham_dir", "isic9_dir", "ham_manifest", "isic9_manifest"}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark every test that (transitively) uses a real-data fixture ``realdata``; then put
    the files with a ``slow`` test first (each file's own order kept). Under
    ``-n 2 --dist loadfile --no-loadscope-reorder`` (.ci/run) the workers take files in
    this order, so the long ones start early and the last minute is short files on both
    workers, not one long file on one of them (xdist's default order, most tests first,
    left the two-source run for the end)."""
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realdata)
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: False (slow) first


# --------------------------------------------------------------------------- the guard

_GUARDED_ROOTS = tuple(
    sorted({os.path.realpath(p) + os.sep for p in (DEFAULT_SHARED_DATA, SHARED_DATA)})
)
_GUARD = {"active": False, "hits": []}
_AUDITED = {"open", "os.listdir", "os.scandir"}


def _touches_real_data(path) -> bool:
    if isinstance(path, int):  # os.open on a file descriptor
        return False
    try:
        full = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return (full + os.sep).startswith(_GUARDED_ROOTS)


def _audit(event: str, args: tuple) -> None:
    if _GUARD["active"] and event in _AUDITED and args and args[0] is not None:
        if _touches_real_data(args[0]):
            _GUARD["hits"].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it is a no-op unless active


@pytest.fixture(autouse=True)
def _real_data_guard(request):
    """Fail an unmarked test that reads the real data (it belongs behind ``realdata``)."""
    marked = request.node.get_closest_marker("realdata") is not None
    _GUARD["active"], _GUARD["hits"] = not marked, []
    yield
    _GUARD["active"] = False
    if _GUARD["hits"]:
        pytest.fail(
            f"{request.node.nodeid} read the real data ({_GUARD['hits'][0]}, "
            f"{len(_GUARD['hits'])} access(es)) without @pytest.mark.realdata",
            pytrace=False,
        )


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


@pytest.fixture()
def light_preload(monkeypatch):
    """Runs of toy notebooks (which import nothing heavy) still fork their kernels, from a
    preload server that imports only ``json`` (in this process and in the run_all.sh it
    starts): the fork path is what they exercise, without preloading torch for them
    (tests/test_kernel_start.py preloads the real list)."""
    from skinhelpers.run import kernel_start

    monkeypatch.setenv(kernel_start.ENV_PRELOAD, "json")
