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


def test_start_notebook_seeds_torch_when_loaded_and_never_loads_it(tmp_path):
    """Chapters 01-04 start without torch (a second per kernel); a chapter that imported
    torch gets it seeded. In fresh interpreters: this test process has torch loaded."""
    import subprocess
    import sys

    _notebook(tmp_path / "09_test.ipynb", 'run_dir = "runs/x"\nseed = 0')
    code = (
        "import sys\n{pre}"
        "from skinhelpers.run import folders\n"
        "ns = {{'run_dir': sys.argv[1], 'seed': 5}}\n"
        "folders.start_notebook('09_test', ns)\n"
        "print('torch' in sys.modules, {post})\n"
    )
    env = {**__import__("os").environ, "SKINHELPERS_NOTEBOOK_DIR": str(tmp_path)}

    def run(pre, post):
        out = subprocess.run(
            [sys.executable, "-c", code.format(pre=pre, post=post), str(tmp_path / "r")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return out

    assert run("", "''") == ["False"]
    loaded = run("import torch\n", "torch.rand(1).item()")
    import torch

    torch.manual_seed(5)
    assert loaded == ["True", str(torch.rand(1).item())]


def test_start_notebook_reads_the_repository_notebooks(monkeypatch):
    monkeypatch.delenv("SKINHELPERS_NOTEBOOK_DIR", raising=False)
    declared = folders.notebook_parameters("07_final_retrain")
    assert {"run_dir", "seed", "epochs", "balance_power", "overrides"} <= set(declared)


def test_read_json_names_the_missing_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match="split.json.*earlier notebook"):
        files.read_json(tmp_path / "split.json")


# ----------------------------------------------------------------------------- run by hand


def _toy_run(tmp_path, monkeypatch, params_source=None):
    """A chapter 05 in its own folder (no git: its defaults are the file's) and a run folder
    that a run_all.sh run and chapters 02 and 07 left behind."""
    nbs = tmp_path / "nbs"
    nbs.mkdir(exist_ok=True)
    _notebook(
        nbs / "05_toy.ipynb",
        params_source
        or 'dataset = "demo"\nrun_dir = "runs/interactive"\nseed = 0\nimage_size = 128\n'
        'epochs = 10\nflag = False\nmode = "a"',
    )
    monkeypatch.setenv("SKINHELPERS_NOTEBOOK_DIR", str(nbs))
    monkeypatch.delenv(folders.RUN_PARAMS_ENV, raising=False)
    run = tmp_path / "run"
    files.write_json(
        run / "run.json",
        {
            "parameters": {
                "dataset": "ham10000",
                "run_dir": "/somewhere/else",
                "image_size": 64,
                "epochs": "ten",  # the wrong type for this notebook: never taken
                "flag": 1,  # an int is no bool
                "mode": "b",
            }
        },
    )
    files.write_json(run / "params" / "02_quality.json", {"changed": {"image_size": 200}})
    files.write_json(run / "params" / "07_later.json", {"changed": {"seed": 5, "mode": "c"}})
    files.write_json(run / "params" / "05_toy.json", {"changed": {"epochs": 3}})  # its own
    ns = {
        "dataset": "demo",
        "run_dir": str(run),
        "seed": 0,
        "image_size": 128,
        "epochs": 10,
        "flag": False,
        "mode": "a",
    }
    return run, ns


def test_a_notebook_run_by_hand_takes_the_runs_values(tmp_path, monkeypatch, capsys):
    """In JupyterLab a parameter left at the notebook's default takes the run's value: the
    nearest earlier chapter's recorded change, else run.json; never a later chapter's, the
    notebook's own old record, run_dir, or a value of the wrong type."""
    run, ns = _toy_run(tmp_path, monkeypatch)
    got, params = folders.start_notebook("05_toy", ns)
    assert got == run
    assert params == {
        "dataset": "ham10000",  # run.json
        "run_dir": str(run),
        "seed": 0,  # 07 comes later
        "image_size": 200,  # chapter 02 (nearer than run.json's 64)
        "epochs": 10,  # "ten" is no int; 05's own record does not count
        "flag": False,  # 1 is no bool
        "mode": "b",  # run.json (07's "c" comes later)
    }
    assert ns["image_size"] == 200 and ns["dataset"] == "ham10000"  # the kernel's names too
    out = capsys.readouterr().out
    assert "3 parameter(s) left at this notebook's default take the run's value" in out
    assert "image_size = 200  (notebook default 128; from params/02_quality.json)" in out
    rec = json.loads((run / "params" / "05_toy.json").read_text())
    assert rec["from_run"] == {
        "dataset": "run.json",
        "image_size": "params/02_quality.json",
        "mode": "run.json",
    }
    assert rec["changed"] == {
        "dataset": "ham10000",
        "run_dir": str(run),
        "image_size": 200,
        "mode": "b",
    }


def test_an_edited_parameter_wins_with_a_note(tmp_path, monkeypatch, capsys):
    run, ns = _toy_run(tmp_path, monkeypatch)
    ns["image_size"] = 48  # edited in the parameters cell
    _, params = folders.start_notebook("05_toy", ns)
    assert params["image_size"] == 48 and params["dataset"] == "ham10000"
    out = capsys.readouterr().out
    assert "note: image_size = 48 as set above; this run has 200 (params/02_quality.json)" in out


def test_papermill_and_the_switch_take_nothing_from_the_run(tmp_path, monkeypatch, capsys):
    run, ns = _toy_run(tmp_path, monkeypatch)
    injected = {**ns, "In": ["", f"# Parameters\nrun_dir = {str(run)!r}\n"]}
    _, params = folders.start_notebook("05_toy", injected)
    assert params["image_size"] == 128 and params["dataset"] == "demo"
    monkeypatch.setenv(folders.RUN_PARAMS_ENV, "off")
    _, params = folders.start_notebook("05_toy", dict(ns))
    assert params["image_size"] == 128 and params["dataset"] == "demo"
    assert "take the run's value" not in capsys.readouterr().out
    rec = json.loads((run / "params" / "05_toy.json").read_text())
    assert rec["from_run"] == {} and rec["changed"] == {"run_dir": str(run)}


def test_the_shipped_default_is_the_committed_one(tmp_path, monkeypatch):
    """JupyterLab autosaves: an edited value saved to disk is still the reader's edit, not
    the notebook's default, because the default is read from git HEAD when committed."""
    import subprocess

    run, ns = _toy_run(tmp_path, monkeypatch)
    nbs = tmp_path / "nbs"
    git = ["git", "-C", str(nbs), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "05_toy.ipynb"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "toy"], check=True)
    path = nbs / "05_toy.ipynb"
    path.write_text(path.read_text().replace("image_size = 128", "image_size = 96"))  # autosave
    assert folders.shipped_defaults("05_toy")["image_size"] == 128
    ns["image_size"] = 96
    _, params = folders.start_notebook("05_toy", ns)
    assert params["image_size"] == 96  # kept: the reader's edit


def test_changed_fields_lists_what_differs_from_the_dataclass_defaults():
    from skinhelpers.train.config import TrainConfig

    cfg = TrainConfig(epochs=3, ema=False)
    assert folders.changed_fields(cfg) == {"epochs": (3, 10), "ema": (False, True)}
    assert folders.changed_fields(TrainConfig()) == {}
    with pytest.raises(TypeError):
        folders.changed_fields({"epochs": 3})
