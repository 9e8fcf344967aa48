"""Kernels forked from the preload server (skinhelpers.run.kernel_start) are the kernels a new
interpreter would be: same hash seed, environment, arguments, working folder, signal
handling, session and matplotlib backend; only the libraries are already imported. A
forked kernel that dies, runs past its timeout or outlives its client is handled as a
new interpreter's would be."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from test_run_batch import _nb  # the toy notebook of the batch-run tests

from skinhelpers.run import execute, kernel_start, pipeline

FINGERPRINT = """
import json, os, random, signal, sys
preloaded = sorted(m for m in ("torch", "sklearn", "pandas", "timm") if m in sys.modules)
import matplotlib.pyplot as plt
import numpy as np
import torch
fp = {
    "hash": hash("skin lesion"),
    "cwd": os.getcwd(),
    "argv": [sys.argv[0], sys.argv[1], *sys.argv[3:]],  # [2] is this kernel's own file
    "path": sys.path,
    "env": {k: v for k, v in os.environ.items() if not k.startswith("JPY_")},
    "sigint": repr(signal.getsignal(signal.SIGINT)),
    "sigterm": repr(signal.getsignal(signal.SIGTERM)),
    "sigpipe": repr(signal.getsignal(signal.SIGPIPE)),
    "sigchld": repr(signal.getsignal(signal.SIGCHLD)),
    "own_session": os.getsid(0) == os.getpid(),
    "name": __name__,
    "backend": plt.get_backend(),
    "torch_threads": torch.get_num_threads(),
    "flags": str(sys.flags),
}
rand = [np.random.rand(), torch.initial_seed(), random.random()]
out = {"fp": fp, "preloaded": preloaded, "ppid": os.getppid(), "rand": rand}
open(OUT, "w").write(json.dumps(out))
"""


def _fingerprints(tmp_path: Path, name: str, fork: bool, monkeypatch, only=None) -> list[dict]:
    nbs = tmp_path / "nbs"  # the same notebooks (and working folder) for both runs
    if not nbs.exists():
        nbs.mkdir()
        for i in (1, 2):
            _nb(
                nbs / f"0{i}_fp.ipynb",
                'run_dir = ""',
                f"OUT = run_dir + '/fp{i}.json'\n" + FINGERPRINT,
            )
    monkeypatch.setenv(kernel_start.ENV_SWITCH, "1" if fork else "0")
    run = pipeline.run(
        "demo", None, "smoke", str(tmp_path / name), notebook_dir=nbs, html=False, only=only
    )
    return [json.loads(p.read_text()) for p in sorted(run.glob("fp*.json"))]


def test_a_forked_kernel_is_the_kernel_a_new_interpreter_would_be(tmp_path, monkeypatch):
    monkeypatch.delenv(kernel_start.ENV_PRELOAD, raising=False)  # the real list
    (fresh,) = _fingerprints(tmp_path, "fresh", False, monkeypatch, only="01")
    forked = _fingerprints(tmp_path, "forked", True, monkeypatch)
    assert len(forked) == 2
    env_a = fresh["fp"].pop("env")
    for b in forked:
        env_b = b["fp"].pop("env")
        assert env_a == {**env_b, kernel_start.ENV_SWITCH: "0"}  # what the test switched
        assert fresh["fp"] == b["fp"]
        assert fresh["preloaded"] == []
        assert b["preloaded"] == ["pandas", "sklearn", "timm", "torch"]
        assert fresh["ppid"] == os.getpid() != b["ppid"]  # a fork of the server, not our child
    # numpy's, torch's and Python's generators start from fresh entropy in each kernel, as
    # in a new interpreter (not the server's state, twice)
    for x, y in zip(forked[0]["rand"], forked[1]["rand"]):
        assert x != y
    assert forked[0]["ppid"] == forked[1]["ppid"]  # one server for the run
    assert forked[0]["fp"]["backend"].endswith("backend_inline")


def test_a_forked_kernel_that_dies_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel_start.ENV_SWITCH, "1")
    monkeypatch.setenv(kernel_start.ENV_PRELOAD, "json")  # what is preloaded is not the point
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _nb(nbs / "01_ok.ipynb", 'run_dir = ""', "x = 1")
    _nb(
        nbs / "02_dies.ipynb",
        'run_dir = ""',
        "x = 1",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    )
    with pytest.raises(SystemExit):
        pipeline.run("demo", None, "smoke", str(tmp_path / "r"), notebook_dir=nbs, html=False)
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    assert rec["results"]["01_ok.ipynb"]["status"] == "ok"
    assert rec["failure"]["status"] == "kernel_died"
    assert rec["failure"]["cell_source"].startswith("import os, signal")


def test_an_interrupt_reaches_a_forked_kernel_and_a_kill_ends_it(monkeypatch):
    """What a --timeout does (SIGINT to the kernel's session, then SIGKILL), on a kernel of
    the preload server."""
    import asyncio

    monkeypatch.setenv(kernel_start.ENV_SWITCH, "1")

    async def run() -> None:
        km = execute.RunKernelManager()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            assert isinstance(km.provisioner.process, kernel_start.ForkedKernel)
            msg_id = kc.execute("import time\ntime.sleep(60)")
            await asyncio.sleep(1.0)
            assert execute.signal_kernel(signal.SIGINT)
            reply = await kc.get_shell_msg(timeout=20)
            assert reply["parent_header"]["msg_id"] == msg_id
            assert reply["content"]["ename"] == "KeyboardInterrupt"
            assert await km.is_alive()  # interrupted, not killed
            assert execute.signal_kernel(signal.SIGKILL)
            assert km.provisioner.process.wait(timeout=10) == -signal.SIGKILL
            assert not await km.is_alive()
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    monkeypatch.setenv(kernel_start.ENV_PRELOAD, "json")
    asyncio.run(run())


def _kernel_cmd(tmp_path: Path) -> list[str]:
    return [sys.executable, "-c", kernel_start.KERNEL_BOOT, "-f", str(tmp_path / "k.json")]


def test_the_server_forks_only_what_a_new_interpreter_would_equal(tmp_path):
    server = kernel_start.ForkServer(preload=("json",))
    try:
        env = dict(server.env)
        # another Python or program, another environment: a new interpreter (None)
        assert server.spawn(["/other/python", *_kernel_cmd(tmp_path)[1:]], env, tmp_path) is None
        assert server.spawn(_kernel_cmd(tmp_path)[:2] + ["print(1)"], env, tmp_path) is None
        other = {**env, "PYTHONHASHSEED": "12345"}
        assert server.spawn(_kernel_cmd(tmp_path), other, tmp_path) is None
        # what jupyter_client sets per kernel does not count
        k = server.spawn(_kernel_cmd(tmp_path), {**env, "JPY_SESSION_NAME": "x"}, tmp_path)
        assert k is not None and k.poll() is None
        # a client that goes away takes its kernel with it
        k._conn.close()
        for _ in range(100):
            if not kernel_start._alive(k.pid):
                break
            time.sleep(0.05)
        assert not kernel_start._alive(k.pid)
        # a kernel killed: its status, as Popen would give it
        k2 = server.spawn(_kernel_cmd(tmp_path), env, tmp_path)
        os.kill(k2.pid, signal.SIGKILL)
        assert k2.wait(timeout=10) == -signal.SIGKILL
        # a kernel left running when the server closes is killed with it
        k3 = server.spawn(_kernel_cmd(tmp_path), env, tmp_path)
        assert k3.poll() is None
    finally:
        server.close()
    assert k3.wait(timeout=10) is not None and not kernel_start._alive(k3.pid)
    assert server.spawn(_kernel_cmd(tmp_path), env, tmp_path) is None  # gone: new interpreter


def test_switched_off_here_and_an_idle_server_exits_by_itself(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel_start.ENV_SWITCH, "0")
    assert not kernel_start.available()
    monkeypatch.setenv(kernel_start.ENV_SWITCH, "1")
    assert kernel_start.available()
    assert kernel_start.preload_list({kernel_start.ENV_PRELOAD: " json, cv2 ,"}) == ("json", "cv2")
    assert kernel_start.preload_list({kernel_start.ENV_PRELOAD: ""}) == ()
    assert kernel_start.preload_list({}) == kernel_start.PRELOAD
    server = kernel_start.ForkServer(preload=("json",), idle_s=0.5)
    try:
        k = server.spawn(_kernel_cmd(tmp_path), dict(server.env), tmp_path)
        time.sleep(1.5)
        assert server.proc.poll() is None  # a kernel running: not idle
        k.kill()
        assert k.wait(timeout=10) == -signal.SIGKILL
        server.proc.wait(timeout=10)  # then idle: it leaves by itself
    finally:
        server.close()
