"""Batch runs a researcher can watch, trust and resume (run_all.sh / skinhelpers.run.pipeline).

Tiny notebooks stand in for the chapters: one that streams output slowly, one that kills
its own kernel, one that never ends, one that skips itself; the real chain's parameters
are checked against the profiles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from skinhelpers.run import execute, pipeline, profiles

# toy notebooks: their kernels fork from a light preload server (conftest.light_preload)
pytestmark = pytest.mark.usefixtures("light_preload")

ROOT = Path(__file__).resolve().parents[1]


def _nb(path: Path, params: str, *cells: str, kernel: str = "python3"):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {path.stem}"),
        p,
        *(nbformat.v4.new_code_cell(c) for c in cells),
    ]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(nb, path)


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def _cli(args: list[str], nbs: Path, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SKINHELPERS_NOTEBOOK_DIR": str(nbs),
        "PYTHONPATH": str(ROOT),
        "SKINHELPERS_PROGRESS": "plain",
        "HOME": str(tmp_path),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "skinhelpers.run.pipeline", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


@pytest.fixture()
def nbs(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    return d


def test_output_streams_live_to_terminal_and_log_with_this_python(tmp_path, nbs):
    """Lines reach the terminal while the cell still runs; the log keeps them; the
    notebook's kernelspec names a kernel that does not exist and is ignored."""
    _nb(
        nbs / "01_slow.ipynb",
        'run_dir = ""',
        "import sys, time\n"
        "from skinhelpers.progress import progress\n"
        "print('python:', sys.executable, flush=True)\n"
        "for _ in progress(range(3), desc='epochs', mininterval=0):\n"
        "    time.sleep(0.5)\n"
        "print('first line', flush=True)\ntime.sleep(4)\nprint('last line')",
        kernel="no-such-kernel-anywhere",
    )
    run_dir = tmp_path / "run"
    p = _cli(["--run", str(run_dir), "--no-html"], nbs, tmp_path)
    seen_at = None
    t0 = time.monotonic()
    for line in p.stdout:
        if "first line" in line:
            seen_at = time.monotonic() - t0
            assert p.poll() is None  # still running: the line came live
            break
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    total = time.monotonic() - t0
    assert seen_at is not None and seen_at < total - 3  # 4 s of sleep still to come
    assert "last line" in out
    assert "without encryption" not in err
    log = (run_dir / "logs" / "01_slow.log").read_text()
    assert f"python: {sys.executable}" in log and "last line" in log
    bars = [ln for ln in log.splitlines() if ln.startswith("epochs:")]
    assert bars and all("\r" not in ln for ln in bars)  # one line per update
    assert "3/3" in bars[-1]


def test_a_mistyped_parameter_is_refused_before_anything_runs(tmp_path, nbs):
    marker = tmp_path / "ran.txt"
    _nb(
        nbs / "01_a.ipynb",
        'run_dir = ""\nlr = 0.001  # learning rate\nema = True',
        f"open({str(marker)!r}, 'w').write('ran')",
    )
    with pytest.raises(SystemExit) as e:
        pipeline.run(
            "demo",
            None,
            "smoke",
            str(tmp_path / "r"),
            extra={"lr": "abc"},
            html=False,
            notebook_dir=nbs,
        )
    msg = str(e.value)
    assert "lr='abc' is a str, expected float (default 0.001)" in msg and "-p lr" in msg
    assert not marker.exists()  # refused before the notebook ran
    assert not (tmp_path / "r" / "run.json").exists()
    with pytest.raises(SystemExit, match=r"ema=1 is a int, expected bool"):
        pipeline.run(
            "demo",
            None,
            "smoke",
            str(tmp_path / "r"),
            extra={"ema": 1},
            html=False,
            notebook_dir=nbs,
        )
    # an int is fine for a float
    pipeline.run(
        "demo", None, "smoke", str(tmp_path / "r"), extra={"lr": 1}, html=False, notebook_dir=nbs
    )
    assert marker.exists()


def test_type_rules():
    assert pipeline.type_error("lr", 1, 0.5) is None
    assert pipeline.type_error("x", [1], None) is None
    assert "expected list" in pipeline.type_error("trial_models", "small_cnn", ["a"])
    assert "expected int" in pipeline.type_error("epochs", True, 3)
    assert "expected dict" in pipeline.type_error("overrides", [], {})


def test_every_profile_fits_the_repository_notebooks():
    """A profile value of the wrong type would be refused at the start of every run."""
    plan = pipeline.make_plan(pipeline.numbered_notebooks(), {})
    for name in profiles.PROFILES:
        values = profiles.resolve(name)
        errors = pipeline.check_parameters(plan, values, dict.fromkeys(values, name))
        assert errors == [], errors


def test_a_fractional_training_budget_is_accepted():
    """`-p max_minutes 0.7` (a short budget per K-fold model) was refused as "a float,
    expected int" on a GPU; the budget is minutes, whole or not."""
    plan = pipeline.make_plan(pipeline.numbered_notebooks(), {})
    for value in (0.7, 45):
        values = {**profiles.resolve("gpu"), "max_minutes": value}
        assert pipeline.check_parameters(plan, values, dict.fromkeys(values, "-p")) == []


def test_list_params_prints_defaults_and_help(tmp_path, nbs):
    _nb(nbs / "01_a.ipynb", 'run_dir = ""\nimage_size = 32  # pixels', "pass")
    _nb(nbs / "02_b.ipynb", "lr = 0.001  # head learning rate", "pass")
    env = {**os.environ, "SKINHELPERS_NOTEBOOK_DIR": str(nbs), "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", "skinhelpers.run.pipeline", "--list-params", "02"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 0 and "02_b.ipynb" in p.stdout and "01_a" not in p.stdout
    assert "lr = 0.001  # head learning rate" in p.stdout
    text = pipeline.list_params(pipeline.numbered_notebooks(nbs), "smoke")
    assert "image_size = 32  # pixels  [profile smoke: 64]" in text


@pytest.mark.slow
def test_a_killed_kernel_is_recorded_and_the_run_resumes(tmp_path, nbs):
    """02 kills its own kernel (as the OOM killer would) the first time; --resume keeps
    01, runs 02 again and goes on with 03. A changed parameter re-runs from there."""
    log = tmp_path / "ran.txt"
    once = tmp_path / "killed-once"
    for i in (1, 2, 3):
        _nb(
            nbs / f"0{i}_step.ipynb",
            'run_dir = ""\nimage_size = 0',
            f"open({str(log)!r}, 'a').write('0{i}\\n')",
            *(
                [
                    (
                        "import os, signal, pathlib\n"
                        f"if not pathlib.Path({str(once)!r}).exists():\n"
                        f"    pathlib.Path({str(once)!r}).touch()\n"
                        "    os.kill(os.getpid(), signal.SIGKILL)"
                    )
                ]
                if i == 2
                else []
            ),
        )
    run_dir = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        pipeline.run("demo", None, "smoke", str(run_dir), notebook_dir=nbs)
    assert e.value.code == 1
    rec = _record(run_dir)
    assert rec["failed"] == "02_step.ipynb"
    assert rec["failure"]["status"] == "kernel_died"
    assert rec["failure"]["cell_index"] == 4  # markdown, injected parameters, params, 2 cells
    assert rec["failure"]["cell_source"].startswith("import os, signal")
    assert rec["results"]["01_step.ipynb"]["status"] == "ok"
    assert "03_step.ipynb" not in rec["results"]
    html = (run_dir / "report" / "index.html").read_text()  # rendered all the same
    assert "class='failed'>kernel died<" in html
    assert log.read_text().split() == ["01", "02"]

    pipeline.run("demo", None, "smoke", str(run_dir), notebook_dir=nbs, resume=True, html=False)
    assert log.read_text().split() == ["01", "02", "02", "03"]
    rec = _record(run_dir)
    assert "failed" not in rec and rec["finished"] and len(rec["resumed"]) == 1
    assert {r["status"] for r in rec["results"].values()} == {"ok"}

    pipeline.run(
        "demo", None, "smoke", str(run_dir), notebook_dir=nbs, resume=True, html=False, extra={}
    )  # all done, same parameters: nothing runs
    assert log.read_text().split() == ["01", "02", "02", "03"]
    pipeline.run(
        "demo",
        None,
        "smoke",
        str(run_dir),
        notebook_dir=nbs,
        resume=True,
        html=False,
        extra={"image_size": 48},
    )
    assert log.read_text().split()[4:] == ["01", "02", "03"]


def test_a_timeout_is_recorded_with_the_cell(tmp_path, nbs):
    _nb(nbs / "01_forever.ipynb", 'run_dir = ""', "x = 1", "import time\ntime.sleep(600)")
    t0 = time.monotonic()
    with pytest.raises(SystemExit):
        pipeline.run(
            "demo", None, "smoke", str(tmp_path / "r"), notebook_dir=nbs, timeout_s=3, html=False
        )
    assert time.monotonic() - t0 < 60
    fail = _record(tmp_path / "r")["failure"]
    assert fail["status"] == "timeout" and fail["cell_index"] == 4
    assert "3 s" in fail["error"]


def test_a_kernel_that_cannot_start_is_recorded(tmp_path, nbs, monkeypatch):
    _nb(nbs / "01_a.ipynb", 'run_dir = ""', "pass")
    init = execute.RunKernelManager.__init__

    def broken(self, *a, **kw):
        init(self, *a, **kw)
        self._kernel_spec.argv[0] = str(tmp_path / "no-such-python")

    monkeypatch.setattr(execute.RunKernelManager, "__init__", broken)
    with pytest.raises(SystemExit):
        pipeline.run("demo", None, "smoke", str(tmp_path / "r"), notebook_dir=nbs, html=False)
    fail = _record(tmp_path / "r")["failure"]
    assert fail["status"] == "kernel_missing" and "no-such-python" in fail["error"]


def test_ctrl_c_is_recorded_and_exits_130(tmp_path, nbs):
    _nb(
        nbs / "01_wait.ipynb",
        'run_dir = ""',
        "print('waiting', flush=True)\nimport time\ntime.sleep(120)",
    )
    run_dir = tmp_path / "r"
    p = _cli(["--run", str(run_dir)], nbs, tmp_path)
    for line in p.stdout:
        if "waiting" in line:
            break
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "INTERRUPTED: notebook 01_wait.ipynb" in err
    fail = _record(run_dir)["failure"]
    assert fail["status"] == "interrupted" and fail["cell_index"] == 3
    assert (run_dir / "report" / "index.html").exists()


def test_notebook_with_an_empty_external_dataset_is_skipped(tmp_path, nbs, capsys):
    marker = tmp_path / "ran09.txt"
    _nb(nbs / "01_a.ipynb", 'run_dir = ""', "pass")
    _nb(
        nbs / "09_external.ipynb",
        'run_dir = ""\nexternal_dataset = ""  # e.g. isic9',
        f"open({str(marker)!r}, 'w').write(external_dataset)",
    )
    run_dir = pipeline.run("demo", None, "smoke", str(tmp_path / "r"), notebook_dir=nbs, html=False)
    assert "09_external.ipynb skipped: external_dataset is empty" in capsys.readouterr().out
    assert not marker.exists()
    assert _record(run_dir)["results"]["09_external.ipynb"]["status"] == "skipped"
    pipeline.run(
        "demo",
        None,
        "smoke",
        str(tmp_path / "r2"),
        notebook_dir=nbs,
        html=False,
        extra={"external_dataset": "isic9"},
    )
    assert marker.read_text() == "isic9"


def test_run_json_records_the_environment(tmp_path, nbs):
    _nb(nbs / "01_a.ipynb", 'run_dir = ""', "pass")
    env = _record(
        pipeline.run("demo", None, "smoke", str(tmp_path / "r"), notebook_dir=nbs, html=False)
    )["environment"]
    import numpy
    import timm
    import torch

    assert env["python"] == sys.version.split()[0]
    assert env["packages"]["torch"] == torch.__version__.split("+")[
        0
    ] or torch.__version__.startswith(env["packages"]["torch"])
    assert env["packages"]["numpy"] == numpy.__version__
    assert env["packages"]["timm"] == timm.__version__
    assert "torchvision" in env["packages"] and "cuda" in env and "cudnn" in env
    assert isinstance(env["gpus"], list)
    assert len(env["git"]["commit"]) == 40 and isinstance(env["git"]["dirty"], bool)


def test_the_kernel_runs_its_exit_handlers_before_its_quick_exit(tmp_path, nbs):
    """The kernel leaves with os._exit (no module tear-down), but only after every exit
    handler ran: handlers a cell registered write their files, in their order."""
    marker = tmp_path / "handlers.txt"
    _nb(
        nbs / "01_exit.ipynb",
        'run_dir = ""',
        "import atexit, pathlib\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "atexit.register(lambda: m.write_text(m.read_text() + 'first registered, last run'))\n"
        "atexit.register(lambda: m.write_text('last registered, first run; '))",
    )
    run_dir = tmp_path / "run"
    p = _cli(["--run", str(run_dir), "--no-html"], nbs, tmp_path)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert marker.read_text() == "last registered, first run; first registered, last run"
    assert _record(run_dir)["results"]["01_exit.ipynb"]["status"] == "ok"


@pytest.mark.skipif(os.name != "posix", reason="IPC transport: posix only")
def test_kernels_started_from_one_folder_have_socket_files_of_their_own(tmp_path, monkeypatch):
    """jupyter_client's default IPC sockets are kernel-ipc-1..5 in the working directory:
    two kernels started at once from the notebooks' folder took each other's sockets and
    one never answered (three processes starting kernels at once: 4 of 90 starts hung)."""
    monkeypatch.chdir(tmp_path)
    a, b = execute.RunKernelManager(), execute.RunKernelManager()
    assert a.transport == b.transport == "ipc"
    assert a.ip != b.ip and os.path.isabs(a.ip) and not a.ip.startswith(str(tmp_path))
    assert len(f"{a.ip}-5") < 100  # a Unix socket path is at most 107 bytes


def test_a_file_in_the_notebooks_folder_does_not_shadow_what_the_kernel_loads(tmp_path, nbs):
    """ipykernel's launcher keeps the notebook's folder off sys.path while the kernel loads
    (as ``python -m ipykernel_launcher`` does), and the cells see the folder afterwards."""
    (nbs / "zmq.py").write_text("raise ImportError('the notebooks folder shadowed zmq')\n")
    (nbs / "helper_here.py").write_text("VALUE = 7\n")
    _nb(nbs / "01_path.ipynb", 'run_dir = ""', "import helper_here\nassert helper_here.VALUE == 7")
    run_dir = tmp_path / "run"
    p = _cli(["--run", str(run_dir), "--no-html"], nbs, tmp_path)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert _record(run_dir)["results"]["01_path.ipynb"]["status"] == "ok"


def test_the_executed_notebook_is_written_sparsely_and_completely_at_the_end(
    tmp_path, nbs, monkeypatch
):
    """papermill would write the notebook before and after each of these 30 cells; the
    run's engine writes it at the start and at the end (and every 10 s in between), and
    the last write holds every output and every cell's timing."""
    import papermill.engines

    writes = []
    real = papermill.engines.write_ipynb
    monkeypatch.setattr(
        papermill.engines, "write_ipynb", lambda nb, path: (writes.append(path), real(nb, path))
    )
    _nb(nbs / "01_many.ipynb", 'run_dir = ""', *(f"print('cell {i}')" for i in range(30)))
    run_dir = pipeline.run("demo", None, "smoke", str(tmp_path / "r"), notebook_dir=nbs,
                           html=False)  # fmt: skip
    assert 2 <= len(writes) <= 4, len(writes)  # start, end (and at most two 10 s saves)
    nb = nbformat.read(run_dir / "01_many.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"][-30:]
    assert [c.outputs[0]["text"] for c in code] == [f"cell {i}\n" for i in range(30)]
    assert all(c.metadata.papermill["status"] == "completed" for c in code)
    assert all(c.metadata.papermill["duration"] is not None for c in code)
    assert nb.metadata.papermill["end_time"] is not None


def test_a_kernel_asked_to_shut_down_exits_by_itself_without_hanging(monkeypatch):
    """ipykernel 7's close() can stop the IOPub thread while the control thread still
    flushes into it: the kernel then hangs for the 10 s flush timeout (the client's SIGTERM
    came first). Eight kernels, each given 30 s before a SIGTERM, must all exit at once
    (5 s: a hang, not a speed, is what this catches) and with status 0 (the quick exit)."""
    import asyncio

    async def one() -> tuple[float, int | None]:
        km = execute.RunKernelManager()
        km.shutdown_wait_time = 60.0  # no SIGTERM within 30 s
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            kc.execute("print('hello')")
            await asyncio.sleep(0.05)
            proc = km.provisioner.process
            kc.shutdown()
            t0 = time.monotonic()
            while proc.poll() is None and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.02)
            return time.monotonic() - t0, proc.poll()
        finally:
            kc.stop_channels()
            if await km.is_alive():
                await km.shutdown_kernel(now=True)

    results = [asyncio.run(one()) for _ in range(8)]
    assert all(code == 0 for _, code in results), results
    assert max(s for s, _ in results) < 5, results
