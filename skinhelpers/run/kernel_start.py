"""How a batch run's kernel process starts: a new interpreter, or a fork of a preloaded one.

* **The program.** A kernel is ``python -c KERNEL_BOOT -f <connection file> ...``:
  :data:`KERNEL_EXIT` (an exit handler, registered before anything else so that it runs
  last, that skips the interpreter's tear-down of its modules) and then :data:`KERNEL_MAIN`
  (ipykernel's own launcher, then a wait for its control thread).
* **Preloaded kernels.** Every chapter's kernel imports the same heavy libraries first
  (torch, torchvision, scikit-learn, pandas, ipykernel: 2-3 s on 2 cores, per notebook).
  The runner has a *preload server* (:class:`ForkServer`, started when the first kernel is
  asked for, :func:`shared_server`): an interpreter that ran :data:`KERNEL_EXIT`, imported
  :data:`PRELOAD` and waits on a Unix socket. Each kernel is a fork of it (``os.fork``, as
  multiprocessing's forkserver does) that runs :data:`KERNEL_MAIN` with the kernel's own
  arguments, environment and working folder, in a session of its own, its random
  generators seeded afresh. The notebook still starts in a fresh kernel: no variable of
  anyone's, only libraries in ``sys.modules`` that the chapters import anyway. A fork is
  used only when nothing the interpreter or a preloaded module read at start-up could
  differ: the same Python and kernel program and the same environment as the server's
  (``PYTHONHASHSEED`` included). Otherwise, when the server is gone, or off Linux (no
  ``os.pidfd_open``), the kernel starts as a new interpreter. The first kernel waits for
  the preloading (which it would have done itself). Nothing preloaded touches a GPU (CUDA
  is initialised in the kernel, never before a fork), and matplotlib is left out (it reads
  ``MPLBACKEND``, which ipykernel sets, at import).
* **Lifecycle.** The server forks, reports the kernel's process id, and when the kernel
  exits (its ``pidfd`` becomes readable) its exit status, as ``Popen.wait()`` would. The
  provisioner (:class:`ForkingProvisioner`) signals, kills and polls that process as
  jupyter_client does a ``Popen``'s. A client that disconnects takes its kernel with it.
  One server serves every kernel of the same environment that this process starts (all
  the notebooks of a run, runs after runs in a script or a test session); it exits after
  :data:`SERVER_IDLE_S` without a kernel, when this process exits (:func:`close_servers`)
  or when its parent is gone, killing what kernels are left.

``SKINLAB_KERNEL_FORK=0`` turns preloading off (every kernel a new interpreter);
``SKINLAB_KERNEL_PRELOAD=torch,kornia`` preloads that list instead of :data:`PRELOAD`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner

log = logging.getLogger(__name__)

ENV_SWITCH = "SKINLAB_KERNEL_FORK"
ENV_PRELOAD = "SKINLAB_KERNEL_PRELOAD"  # a comma-separated list instead of PRELOAD

# The kernel's exit: an exit handler registered before anything else runs last, after all
# the others; it flushes the streams and ends the process without the interpreter's
# tear-down of modules (torch's alone took 0.4 s per notebook).
KERNEL_EXIT = (
    "import atexit, os, runpy, sys\n"
    "def _quick_exit():\n"
    "    for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):\n"
    "        try:\n"
    "            s.flush()\n"
    "        except Exception:\n"
    "            pass\n"
    "    os._exit(0)\n"
    "atexit.register(_quick_exit)\n"
)
# Then ipykernel's own launcher, run as ``python -m ipykernel_launcher`` would run it (it
# keeps the notebook's folder off sys.path while the kernel loads). When it returns, the
# kernel was asked to shut down and its loops were told to stop: wait for the control
# thread to send its last reply and flush while the IOPub thread still runs. ipykernel's
# own close() (an exit handler) stops IOPub first and then joins the control thread, which
# may still be flushing into the stopped IOPub: a hang until the client's SIGTERM, 2.5 s
# later (11 of 20 shutdowns here with ipykernel 7.4.0, the newest; 0 of 20 with the wait).
KERNEL_MAIN = (
    "import runpy\n"
    "runpy.run_module('ipykernel_launcher', run_name='__main__', alter_sys=True)\n"
    "from ipykernel.kernelapp import IPKernelApp\n"
    "_control = IPKernelApp.instance().control_thread\n"
    "if _control is not None:\n"
    "    _control.join(10)\n"
)
KERNEL_BOOT = KERNEL_EXIT + KERNEL_MAIN

#: what the preload server imports (what the chapters' first cells import anyway; not
#: matplotlib, which reads MPLBACKEND at import, nor anything that touches a GPU)
PRELOAD = (
    "numpy",
    "pandas",
    "scipy.stats",
    "sklearn.metrics",
    "sklearn.model_selection",
    "PIL.Image",
    "cv2",
    "torch",
    "torchvision",
    "timm",
    "ipykernel.kernelapp",
)
#: environment variables that differ between kernels of one run by design (jupyter_client
#: sets them per kernel); any other difference from the server's environment means a new
#: interpreter
PER_KERNEL_ENV = frozenset(
    {"JPY_PARENT_PID", "JPY_SESSION_NAME", "PYTHONEXECUTABLE", "PYTEST_CURRENT_TEST"}
)  # (pytest sets the last for each test; read at run time only, by ipykernel)
READY_TIMEOUT_S = 10.0  # for the server's reply with a forked kernel's process id
# the first kernel waits for the preloading (what it would have imported itself: 3 s here)
PRELOAD_WAIT_S = 120.0
SERVER_IDLE_S = 60.0  # a server with no kernel for this long exits (its memory is freed)


def preload_list(env: dict | None = None) -> tuple[str, ...]:
    """What a server for kernels with ``env`` (this process's by default) preloads:
    ``SKINLAB_KERNEL_PRELOAD`` (comma-separated module names; empty: nothing) when set,
    else :data:`PRELOAD`."""
    env = os.environ if env is None else env
    if ENV_PRELOAD in env:
        return tuple(m.strip() for m in env[ENV_PRELOAD].split(",") if m.strip())
    return PRELOAD


def available() -> bool:
    """Whether kernels can be forked here (Linux's pidfd, not switched off)."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    return hasattr(os, "pidfd_open") and hasattr(os, "fork")


# ----------------------------------------------------------------------------- server side


def serve_kernels(path: str, preload: tuple[str, ...], idle_s: float = SERVER_IDLE_S) -> None:
    """The preload server's main loop (in its own interpreter; see the module doc)."""
    import importlib

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # close(): leave via finally
    # as ipykernel_launcher does before loading anything: no module from the working folder
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    # ipykernel reads its parent's pid at import (the parent poller's, and whether to print
    # "Ctrl-C will not work"): the kernels' parent is this server
    os.environ["JPY_PARENT_PID"] = str(os.getpid())
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - the kernel will import it (and say why)
            log.debug(f"preload server: {name} not preloaded ({e})")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a forked CUDA context is broken
        raise SystemExit("preload server: CUDA was initialised by a preloaded module")
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".part")
    listener.listen(16)
    os.replace(path + ".part", path)  # the socket's name appears once it listens: ready
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, ("accept",))
    kernels: dict[int, tuple[socket.socket, int]] = {}  # pid -> (client socket, pidfd)
    idle_since = time.monotonic()
    try:
        while os.getppid() == parent:
            if kernels:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_s:
                break
            for key, _ in sel.select(timeout=min(1.0, idle_s)):
                kind = key.data[0]
                if kind == "accept":
                    _start_kernel(listener, sel, kernels)
                elif kind == "exited":
                    _report_exit(key.data[1], sel, kernels)
                elif kind == "client":  # a message or EOF: the client is gone (or done)
                    pid = key.data[1]
                    conn = kernels[pid][0]
                    try:
                        data = conn.recv(64)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(conn)
                        _kill_group(pid)  # its exit is reported (to no one) and reaped
    finally:
        for pid in list(kernels):
            _kill_group(pid)
        for pid in list(kernels):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        listener.close()


def _start_kernel(listener, sel, kernels) -> None:
    conn, _ = listener.accept()
    conn.settimeout(READY_TIMEOUT_S)
    try:
        request = json.loads(_read_line(conn))
    except (OSError, ValueError) as e:
        log.debug(f"preload server: bad request ({e})")
        conn.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the kernel: never returns
        _become_kernel(
            request,
            [listener, conn, *(c for c, _ in kernels.values())],
            [fd for _, fd in kernels.values()],
            sel,
        )
    pidfd = os.pidfd_open(pid)
    kernels[pid] = (conn, pidfd)
    sel.register(pidfd, selectors.EVENT_READ, ("exited", pid))
    sel.register(conn, selectors.EVENT_READ, ("client", pid))
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:
        _kill_group(pid)


def _report_exit(pid: int, sel, kernels) -> None:
    conn, pidfd = kernels.pop(pid)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sel.unregister(pidfd)
    os.close(pidfd)
    try:
        sel.unregister(conn)
    except KeyError:  # the client had gone already
        pass
    try:
        conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
    except OSError:
        pass
    conn.close()


def _become_kernel(request: dict, sockets: list, fds: list[int], sel) -> None:
    """In the forked child: become the kernel ``request`` asks for, then exit."""
    import builtins

    try:
        sel.close()
        for s in sockets:
            s.close()
        for fd in fds:  # the other kernels' pidfds
            os.close(fd)
        os.setsid()  # a session of its own, as jupyter_client starts a kernel
        # the handlers a new interpreter has (SIGPIPE stays ignored, as Python sets it)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["JPY_PARENT_PID"] = str(os.getppid())  # ipykernel exits with the server
        sys.argv = ["-c", *request["args"]]
        sys.path.insert(0, "")  # python -c's first entry (ipykernel_launcher removes it)
        # random generators from fresh entropy, as a new interpreter's (Python's own random
        # reseeds itself after a fork)
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        if "torch" in sys.modules:
            sys.modules["torch"].default_generator.seed()
        code = compile(KERNEL_MAIN, "<string>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102
    except SystemExit:
        pass
    except BaseException:  # noqa: BLE001 - printed as a new interpreter would print it
        import traceback

        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # ipykernel's, then KERNEL_EXIT's (which ends the process)
        finally:
            os._exit(0)


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except OSError:
            continue


def _read_line(conn: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf.decode()


# ----------------------------------------------------------------------------- client side


class ForkedKernel:
    """A kernel forked by the preload server, with the part of ``subprocess.Popen`` that
    jupyter_client's provisioner uses (``pid``, ``poll``, ``wait``, ``send_signal``,
    ``terminate``, ``kill``; no pipes)."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, conn: socket.socket):
        self.pid, self.returncode, self._conn = pid, None, conn

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read(timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            self._read(timeout=0.5 if left is None else min(left, 0.5))
        return self.returncode

    def _read(self, timeout: float) -> None:
        self._conn.settimeout(timeout)
        try:
            data = self._conn.recv(4096)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if data:
            self.returncode = json.loads(data.decode().splitlines()[-1])["exit"]
        elif not _alive(self.pid):  # the server went away first: no status to report
            self.returncode = 1
        else:
            return
        self._conn.close()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ForkServer:
    """A preload server (its own interpreter, started with ``env``) and the client that asks
    it for kernels. :meth:`spawn` returns ``None`` when a new interpreter must be used."""

    def __init__(
        self,
        env: dict | None = None,
        preload: tuple[str, ...] | None = None,
        idle_s: float = SERVER_IDLE_S,
    ):
        self.env = dict(os.environ if env is None else env)
        self.preload = tuple(preload_list(self.env) if preload is None else preload)
        self.idle_s = idle_s
        self.proc: subprocess.Popen | None = None  # started by the first spawn()
        self._dir = tempfile.mkdtemp(prefix="skinlab-preload-")
        self.path = os.path.join(self._dir, "kernels.sock")
        self._warned = False
        self.forked = 0  # kernels it started

    def start(self) -> None:
        program = KERNEL_EXIT + (
            "from skinhelpers.run.kernel_start import serve_kernels\n"
            f"serve_kernels({self.path!r}, {self.preload!r}, {self.idle_s!r})\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program],
            env=self.env,
            cwd=self._dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the runner, not it
        )

    def ready(self, wait_s: float = 0.0) -> bool:
        """Whether the server listens (waiting up to ``wait_s`` while it preloads)."""
        deadline = time.monotonic() + wait_s
        while self.proc is not None and self.proc.poll() is None:
            if os.path.exists(self.path):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return False

    def spawn(self, cmd: list[str], env: dict | None, cwd) -> ForkedKernel | None:
        """Fork a kernel running ``cmd`` (a :data:`KERNEL_BOOT` command line) with ``env``
        in ``cwd``, or ``None`` (the caller starts a new interpreter)."""
        env = dict(os.environ if env is None else env)
        if cmd[:3] != [sys.executable, "-c", KERNEL_BOOT]:
            return None
        differs = sorted({k for k, _ in set(_env_key(env)) ^ set(_env_key(self.env))})
        if differs:
            log.debug(f"kernel started as a new interpreter: its environment differs in {differs}")
            return None
        if self.proc is None:
            self.start()
        if not self.ready(wait_s=PRELOAD_WAIT_S):
            if not self._warned:
                log.warning(
                    "the preload server is not running (exit code "
                    f"{self.proc.poll()}); kernels start as new interpreters"
                )
                self._warned = True
            return None
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(READY_TIMEOUT_S)
            conn.connect(self.path)
            request = {"args": cmd[3:], "env": env, "cwd": str(cwd or os.getcwd())}
            conn.sendall(json.dumps(request).encode() + b"\n")
            pid = json.loads(_read_line(conn))["pid"]
        except (OSError, ValueError, KeyError) as e:
            conn.close()
            log.warning(f"the preload server did not start a kernel ({e}); a new interpreter")
            return None
        self.forked += 1
        return ForkedKernel(pid, conn)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


_SERVERS: dict[tuple, ForkServer] = {}


def _env_key(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if k not in PER_KERNEL_ENV))


def shared_server(env: dict | None = None) -> ForkServer:
    """This process's preload server for kernels with ``env`` (which also says what it
    preloads, :func:`preload_list`): the one already running, or a new one (started by its first
    :meth:`~ForkServer.spawn`). Servers of other environments keep running until they have
    been idle for :data:`SERVER_IDLE_S`; all are closed when this process exits."""
    env = dict(os.environ if env is None else env)
    key = (_env_key(env), preload_list(env))
    server = _SERVERS.get(key)
    if server is None or (server.proc is not None and server.proc.poll() is not None):
        if server is not None:
            server.close()
        if not _SERVERS:
            atexit.register(close_servers)
        server = _SERVERS[key] = ForkServer(env, key[1])
    return server


def close_servers() -> None:
    """Close every preload server of this process (and the kernels still running)."""
    while _SERVERS:
        _SERVERS.popitem()[1].close()


class ForkingProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, except that a kernel is forked from this
    process's preload server for its environment when it can be (see the module doc)."""

    async def launch_kernel(self, cmd: list[str], **kwargs):
        proc = None
        if available():
            env = kwargs.get("env")
            proc = shared_server(env).spawn(cmd, env, kwargs.get("cwd"))
        if proc is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.process = proc
        self.pid = self.pgid = proc.pid  # the child called setsid(): its own group
        self.cwd = kwargs.get("cwd", Path.cwd())
        return self.connection_info
