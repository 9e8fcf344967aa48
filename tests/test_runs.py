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
    files.write_json(tmp_path / "m.json", {"auc": float("nan"), "x": np.float32(0.5),
                                          "n": np.int64(3), "inf": [float("inf")]})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "x": 0.5, "n": 3, "inf": [None]}


def test_start_notebook_records_params_and_seeds(tmp_path):
    run = folders.start_notebook("09_test", {"run_dir": str(tmp_path / "r"), "seed": 7, "k": [1]})
    rec = json.loads((run / "params" / "09_test.json").read_text())
    assert rec["params"]["seed"] == 7 and rec["notebook"] == "09_test"
    a = np.random.rand(3)
    folders.start_notebook("09_test", {"run_dir": str(tmp_path / "r"), "seed": 7})
    assert np.array_equal(a, np.random.rand(3))
    with pytest.raises(ValueError, match="run_dir"):
        folders.start_notebook("09_test", {"seed": 1})


def test_read_json_names_the_missing_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match="split.json.*earlier notebook"):
        files.read_json(tmp_path / "split.json")
