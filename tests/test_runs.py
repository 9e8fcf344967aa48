"""Run folders: atomic writes, strict JSON, recorded parameters, reproducible seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skinhelpers import files
from skinhelpers.run import folders


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    files.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_json_is_strict(tmp_path):
    files.write_json(
        tmp_path / "m.json",
        {"auc": float("nan"), "x": np.float32(0.5), "n": np.int64(3), "inf": [float("inf")]},
    )
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "x": 0.5, "n": 3, "inf": [None]}


def _notebook(path, params_source: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params_source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), cell, nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def test_start_notebook_collects_declared_names_records_and_seeds(tmp_path, monkeypatch):
    _notebook(tmp_path / "09_test.ipynb", 'run_dir = "runs/x"\nseed = 0\nk = [1]')
    monkeypatch.setenv("SKINHELPERS_NOTEBOOK_DIR", str(tmp_path))
    # the kernel's globals: injected values (run_dir, seed) win; other names are not recorded
    ns = {"run_dir": str(tmp_path / "r"), "seed": 7, "k": [1], "np": np, "_private": 3}
    run, params = folders.start_notebook("09_test", ns)
    assert run == tmp_path / "r" and params == {"run_dir": str(tmp_path / "r"), "seed": 7, "k": [1]}
    rec = json.loads((run / "params" / "09_test.json").read_text())
    assert rec["params"] == params and rec["notebook"] == "09_test"
    a = np.random.rand(3)
    folders.start_notebook("09_test", ns)
    assert np.array_equal(a, np.random.rand(3))
    with pytest.raises(ValueError, match=r"\['k'\] are declared but not defined"):
        folders.start_notebook("09_test", {"run_dir": str(tmp_path / "r"), "seed": 1})
    with pytest.raises(ValueError, match="run_dir"):
        folders.start_notebook("09_test", {"seed": 1}, names=["seed"])
    with pytest.raises(FileNotFoundError, match="10_absent.ipynb"):
        folders.start_notebook("10_absent", ns)


def test_start_notebook_reads_the_repository_notebooks(monkeypatch):
    monkeypatch.delenv("SKINHELPERS_NOTEBOOK_DIR", raising=False)
    declared = folders.notebook_parameters("07_final_retrain")
    assert {"run_dir", "seed", "epochs", "balance_power", "overrides"} <= set(declared)


def test_read_json_names_the_missing_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match="split.json.*earlier notebook"):
        files.read_json(tmp_path / "split.json")
