"""run_all.sh / skinhelpers.run.pipeline: order, parameters, subsets, loud failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from skinhelpers.run import pipeline

# toy notebooks: their kernels fork from a light preload server (conftest.light_preload)
pytestmark = pytest.mark.usefixtures("light_preload")

ROOT = Path(__file__).resolve().parents[1]


def _nb(path: Path, params: str, body: str):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture()
def toy_notebooks(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    log = tmp_path / "log.txt"
    for i in (1, 2, 3):
        _nb(
            d / f"0{i}_step.ipynb",
            'run_dir = ""\nimage_size = 0\nlabel = "x"',
            f"open({str(log)!r}, 'a').write('0{i} ' + str(image_size) + ' ' + label + '\\n')",
        )
    _nb(d / "04_other.ipynb", 'run_dir = ""\nonly_here = 1', "pass")
    return d, log


def test_runs_in_order_with_profile_and_cli_parameters(tmp_path, toy_notebooks):
    nbs, log = toy_notebooks
    run_dir = pipeline.run(
        "demo",
        None,
        "smoke",
        str(tmp_path / "run"),
        only="01-02,04",
        extra={"label": "hello", "only_here": 5},
        html=False,
        notebook_dir=nbs,
    )
    assert log.read_text().splitlines() == ["01 64 hello", "02 64 hello"]
    assert sorted(p.name for p in run_dir.glob("*.ipynb")) == [
        "01_step.ipynb",
        "02_step.ipynb",
        "04_other.ipynb",
    ]
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["profile"] == "smoke" and rec["parameters"]["label"] == "hello"
    assert set(rec["timings_s"]) == {"01_step.ipynb", "02_step.ipynb", "04_other.ipynb"}


def test_unknown_parameter_is_refused_before_running(tmp_path, toy_notebooks):
    nbs, log = toy_notebooks
    with pytest.raises(SystemExit, match=r"\['imgsize'\] are not declared"):
        pipeline.run(
            "demo",
            None,
            "smoke",
            str(tmp_path / "r"),
            extra={"imgsize": 3},
            html=False,
            notebook_dir=nbs,
        )
    # a renamed parameter says its new name (compile shadowed the builtin in notebooks)
    with pytest.raises(SystemExit, match=r"'compile' is now 'torch_compile'"):
        pipeline.run(
            "demo",
            None,
            "smoke",
            str(tmp_path / "r"),
            extra={"compile": True},
            html=False,
            notebook_dir=nbs,
        )
    assert not log.exists()


def test_bad_selection_and_profile(tmp_path, toy_notebooks):
    nbs, _ = toy_notebooks
    with pytest.raises(ValueError, match=r"no notebook numbered \[9\]"):
        pipeline.run(
            "demo", None, "smoke", str(tmp_path / "r"), only="9", html=False, notebook_dir=nbs
        )
    with pytest.raises(ValueError, match="'1x'"):
        pipeline.select(pipeline.numbered_notebooks(nbs), "1x")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        pipeline.run("demo", None, "fast", str(tmp_path / "r"), html=False, notebook_dir=nbs)


def test_failure_names_notebook_and_cell_and_stops(tmp_path, toy_notebooks, capsys):
    nbs, log = toy_notebooks
    _nb(nbs / "02_step.ipynb", 'run_dir = ""', "raise RuntimeError('boom in step two')")
    with pytest.raises(SystemExit) as e:
        pipeline.run("demo", None, "smoke", str(tmp_path / "r"), html=False, notebook_dir=nbs)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "FAILED: notebook 02_step.ipynb" in err and "cell index 2" in err
    assert "RuntimeError: boom in step two" in err
    assert log.read_text().splitlines() == ["01 64 x"]  # 03 never ran
    assert json.loads((tmp_path / "r" / "run.json").read_text())["failed"] == "02_step.ipynb"


def test_run_all_sh_exit_code_and_message(tmp_path, toy_notebooks):
    nbs, _ = toy_notebooks
    _nb(nbs / "03_step.ipynb", 'run_dir = ""', "1/0")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SKINHELPERS_NOTEBOOK_DIR": str(nbs),
    }
    p = subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), "--run", str(tmp_path / "r"), "--no-html"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 1
    assert "FAILED: notebook 03_step.ipynb" in p.stderr
    # the pipeline's own lines (its logger, run as __main__) reach the terminal
    assert "=== 01_step.ipynb" in p.stdout and "=== 02_step.ipynb done in" in p.stdout
    assert "ZeroDivisionError" in p.stderr
    # the record shows what the user typed, not the path of pipeline.py
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    assert rec["command"] == f"./run_all.sh --run {tmp_path / 'r'} --no-html"
    bad = subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), "--only", "7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2 and "no notebook numbered [7]" in bad.stderr


def test_ctrl_c_outside_a_notebook_is_recorded_not_a_key_error(
    tmp_path, toy_notebooks, monkeypatch
):
    """A Ctrl-C that reaches the pipeline outside ``execute`` (no result attached) still
    gives the interrupted record, with the seconds it ran, and exit code 130."""
    nbs, _ = toy_notebooks

    def interrupted(*a, **k):
        raise KeyboardInterrupt()

    monkeypatch.setattr(pipeline.execute, "execute", interrupted)
    with pytest.raises(SystemExit) as e:
        pipeline.run("demo", None, "smoke", str(tmp_path / "run"), html=False, notebook_dir=nbs)
    assert e.value.code == 130
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    res = rec["results"]["01_step.ipynb"]
    assert res["status"] == "interrupted" and res["seconds"] >= 0
    assert rec["failure"]["notebook"] == "01_step.ipynb"


def test_kernels_hash_strings_the_same_in_every_run(tmp_path, toy_notebooks, monkeypatch):
    """PYTHONHASHSEED acts when an interpreter starts: the pipeline gives it to the kernels
    (the run's seed), so string hashes (set order) are the same run after run."""
    nbs, _ = toy_notebooks
    out = tmp_path / "hash.txt"
    _nb(
        nbs / "05_hash.ipynb",
        'run_dir = ""\nseed = 0',
        f"import os\nopen({str(out)!r}, 'a').write(os.environ['PYTHONHASHSEED'] + ' ' + "
        "str(hash('skin')) + '\\n')",
    )
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    for k in range(2):
        pipeline.run("demo", None, "smoke", str(tmp_path / f"r{k}"), only="05", html=False,
                     notebook_dir=nbs, extra={"seed": 7})  # fmt: skip
    first, second = out.read_text().splitlines()
    assert first == second and first.startswith("7 ")


def test_repository_notebooks_are_clean_and_parameterised():
    nbs = pipeline.numbered_notebooks()
    assert nbs and nbs[0].name.startswith("01_")
    for p in nbs:
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code), f"{p.name} has outputs"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{p.name}: needs exactly one 'parameters' cell"
        declared = pipeline.declared_parameters(p)
        assert {"dataset", "run_dir", "seed"} <= set(declared), p.name
        # notebooks hold narrative and calls, not library code
        assert not any(
            line.startswith(("def ", "class ")) for c in code for line in c.source.splitlines()
        ), f"{p.name} defines functions"


def test_a_kernel_start_race_is_retried_and_other_errors_are_not(monkeypatch):
    """jupyter_client's 'Invalid Signature' while a kernel starts (CI saw it once with two
    workers starting kernels at once) starts the notebook again; other errors raise."""
    from skinhelpers.run import execute as ex

    monkeypatch.setattr(ex.time, "sleep", lambda s: None)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) < 3:
            raise ValueError("Invalid Signature: b'4a75'")
        return "done"

    assert ex._start_retried(flaky, "nb.ipynb") == "done" and len(calls) == 3

    def always(*args, **kwargs):
        raise ValueError("Invalid Signature: b'00'")

    with pytest.raises(ValueError, match="Invalid Signature"):
        ex._start_retried(always)

    def other(*args, **kwargs):
        calls.append(args)
        raise ValueError("a bug in a cell")

    calls.clear()
    with pytest.raises(ValueError, match="a bug"):
        ex._start_retried(other)
    assert len(calls) == 1
