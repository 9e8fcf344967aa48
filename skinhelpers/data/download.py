"""Download a registered dataset from Kaggle, or say clearly why that cannot happen.

Credentials come from ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``~/.kaggle/kaggle.json``
(``KAGGLE_CONFIG_DIR`` moves it), as the ``kaggle`` package reads them. They are never
printed or saved. Without credentials, or without a network route to Kaggle, the error
comes within seconds and says how to fix it or how to use a local copy instead.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from skinhelpers.data.manifest import find_root
from skinhelpers.data.registry import DEFAULT_DATA_DIR, DatasetError
from skinhelpers.data.registry import dataset_spec as get_spec

log = logging.getLogger(__name__)

KAGGLE_HOST = "www.kaggle.com"


class DownloadError(RuntimeError):
    """The dataset cannot be downloaded here; the message says what to do instead."""


def _local_hint(dataset: str, dest: Path) -> str:
    spec = get_spec(dataset)
    return (
        f"Or download it by hand from https://www.kaggle.com/datasets/{spec.kaggle_slug}, "
        f"unzip it anywhere and pass that folder as data_dir (run_all.sh --data-dir DIR); "
        f"the expected layout is {spec.layout}. Default folder: {dest}."
    )


def kaggle_credentials_present() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    return cfg.is_file()


def kaggle_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to Kaggle within ``timeout`` seconds (DNS included)."""
    try:
        with socket.create_connection((KAGGLE_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def download(
    dataset: str, dest: str | os.PathLike | None = None, force: bool = False, timeout: float = 3.0
) -> Path:
    """Download ``dataset`` into ``dest`` (default ``data/raw/<dataset>``) and unzip it.

    Returns the dataset root. An existing complete copy is reused unless ``force``.
    """
    spec = get_spec(dataset)
    if spec.kaggle_slug is None:
        raise DownloadError(
            f"dataset '{dataset}' is not downloadable: "
            + (
                "it is generated offline (load_manifest('demo'))."
                if dataset == "demo"
                else "point data_dir at your folder."
            )
        )
    dest = Path(dest) if dest else DEFAULT_DATA_DIR / dataset
    if dest.exists() and not force:
        try:
            return find_root(dataset, dest)
        except DatasetError:
            pass
    if not kaggle_credentials_present():
        raise DownloadError(
            f"Cannot download '{dataset}' ({spec.kaggle_slug}): no Kaggle credentials. "
            "Create an API token on kaggle.com (Settings > API > Create New Token) and save "
            "it as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY. "
            + _local_hint(dataset, dest)
        )
    if not kaggle_reachable(timeout):
        raise DownloadError(
            f"Cannot download '{dataset}' ({spec.kaggle_slug}): {KAGGLE_HOST} is not reachable "
            f"from this machine (no network, a proxy, or a firewall; gave up after {timeout:g} s). "
            + _local_hint(dataset, dest)
        )
    try:
        from kaggle.api.kaggle_api_extended import (
            KaggleApi,  # local: the kaggle package authenticates on import: only when downloading
        )
    except ImportError as e:  # pragma: no cover - kaggle is a dependency
        raise DownloadError("the 'kaggle' package is not installed: pip install kaggle") from e
    api = KaggleApi()
    try:
        api.authenticate()
    except Exception as e:
        raise DownloadError(
            f"Kaggle rejected the credentials ({type(e).__name__}); check "
            "kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY. " + _local_hint(dataset, dest)
        ) from None
    dest.mkdir(parents=True, exist_ok=True)
    log.info(f"downloading {spec.kaggle_slug} into {dest} ...")
    try:
        api.dataset_download_files(spec.kaggle_slug, path=str(dest), unzip=True, quiet=False)
    except Exception as e:
        raise DownloadError(
            f"Kaggle download of {spec.kaggle_slug} failed: "
            f"{type(e).__name__}: {e}. " + _local_hint(dataset, dest)
        ) from None
    return find_root(dataset, dest)
