"""What the library says goes through the ``skinhelpers`` logger: shown as before (stdout,
same words) by default, silenced or widened by ``log_level`` / ``-q`` / ``--verbose``, and
no library module prints outside a command-line entry point."""

from __future__ import annotations

import ast
import json
import logging
import os
from pathlib import Path

import nbformat
import pytest
from test_pipeline import _nb  # the toy notebook of the pipeline tests

from skinhelpers import logs
from skinhelpers.__main__ import main as cli
from skinhelpers.data.imaging import read_preprocessing
from skinhelpers.run import pipeline

# toy notebooks: their kernels fork from a light preload server (conftest.light_preload)
pytestmark = pytest.mark.usefixtures("light_preload")

PKG = Path(__file__).resolve().parents[1] / "skinhelpers"


@pytest.fixture(autouse=True)
def _restore_level(monkeypatch):
    monkeypatch.delenv(logs.ENV, raising=False)
    yield
    os.environ.pop(logs.ENV, None)  # pipeline.run sets it for its kernels
    logs.configure("INFO")


def _library_modules():
    return [p for p in PKG.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]


def _prints_outside_entry_points(tree: ast.Module) -> list[int]:
    """Lines of ``print`` calls that are not inside a function named ``main`` or an
    ``if __name__ == "__main__":`` block (command-line output), nor inside a string."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            allowed |= set(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            allowed |= set(range(node.lineno, node.end_lineno + 1))
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "print"
        and n.lineno not in allowed
    ]


def test_no_library_module_prints_and_each_has_its_logger():
    bad, no_logger = {}, []
    for p in _library_modules():
        src = p.read_text()
        lines = _prints_outside_entry_points(ast.parse(src))
        if lines:
            bad[str(p.relative_to(PKG))] = lines
        runnable = "log = logging.getLogger(__spec__.name if __spec__ else __name__)"
        if "__main__" in src and 'if __name__ == "__main__"' in src:
            if runnable not in src:  # as __main__, getLogger(__name__) is outside skinhelpers
                no_logger.append(str(p.relative_to(PKG)))
        elif p.name != "logs.py" and "log = logging.getLogger(__name__)" not in src:
            no_logger.append(str(p.relative_to(PKG)))
    assert not bad, bad
    assert not no_logger, no_logger


def test_messages_show_as_before_and_the_level_silences_them(tmp_path, capsys):
    read_preprocessing(tmp_path)  # no preprocessing.json: a note (a warning record)
    out = capsys.readouterr().out
    assert out.startswith("note: preprocessing.json not found in the run folder")
    logs.configure("ERROR")
    read_preprocessing(tmp_path)
    assert capsys.readouterr().out == ""
    logs.configure("info")
    logging.getLogger("skinhelpers.any.module").debug("not shown at INFO")
    logging.getLogger("skinhelpers.any.module").info("shown at INFO")
    assert capsys.readouterr().out == "shown at INFO\n"
    logging.getLogger("skinhelpers.any.module").error("an error")
    assert capsys.readouterr().err == "an error\n"
    with pytest.raises(ValueError, match="log_level must be one of"):
        logs.configure("LOUD")


def test_cli_quiet_and_verbose(capsys):
    assert cli(["datasets", "-q"]) == 0
    assert logging.getLogger(logs.ROOT).level == logging.WARNING
    assert "ham10000" in capsys.readouterr().out  # the command's own output stays
    assert cli(["--verbose", "datasets"]) == 0
    assert logging.getLogger(logs.ROOT).level == logging.DEBUG


def test_log_level_run_parameter_reaches_the_notebooks(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _nb(
        nbs / "01_talk.ipynb",
        'run_dir = ""',
        "import logging\nimport skinhelpers\n"
        "lg = logging.getLogger('skinhelpers.talk')\n"
        "lg.info('an info line')\nlg.warning('a warning line')",
    )
    run = pipeline.run("demo", None, "smoke", str(tmp_path / "r"), html=False, notebook_dir=nbs,
                       extra={"log_level": "warning"})  # fmt: skip
    text = json.dumps(nbformat.read(run / "01_talk.ipynb", as_version=4)["cells"][-1]["outputs"])
    assert "a warning line" in text and "an info line" not in text
    assert json.loads((run / "run.json").read_text())["parameters"]["log_level"] == "WARNING"
    logs.configure("INFO")
    run = pipeline.run("demo", None, "smoke", str(tmp_path / "r2"), html=False, notebook_dir=nbs,
                       extra={"log_level": "INFO"})  # fmt: skip
    text = json.dumps(nbformat.read(run / "01_talk.ipynb", as_version=4)["cells"][-1]["outputs"])
    assert "an info line" in text and "a warning line" in text
    with pytest.raises(ValueError, match="log_level"):
        pipeline.run("demo", None, "smoke", str(tmp_path / "r3"), html=False, notebook_dir=nbs,
                     extra={"log_level": "LOUD"})  # fmt: skip
    assert not (tmp_path / "r3").exists()
