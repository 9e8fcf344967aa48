"""Execute one notebook with papermill the way a batch run needs it.

* **This Python.** The kernel runs ``sys.executable``'s ``ipykernel_launcher`` (the
  environment ``run_all.sh`` set up; see :data:`KERNEL_BOOT`), whatever kernelspec the
  notebook's metadata or the user's Jupyter names, so a missing or foreign kernel cannot be
  picked.
* **A quick exit.** When the last cell is done the kernel shuts down as asked (every exit
  handler runs: logs, TensorBoard, output streams), then leaves with ``os._exit``, skipping
  the interpreter's tear-down of its modules: with torch loaded that took 0.4-0.7 s per
  notebook, and IPython's history database is not written (a batch run has no use for it).
* **IPC transport.** Kernel and client talk over Unix sockets, not TCP: nothing listens on
  a port and ipykernel has no "running over TCP without encryption" warning to print. Each
  kernel's socket files are its own (:class:`RunKernelManager`).
* **Live output.** Every stream a cell writes goes to the terminal as it arrives and to
  ``<run_dir>/logs/<notebook>.log`` (carriage-return redraws become lines there; each
  attempt is appended under a dated header, so a resumed notebook's log keeps the first).
  The executed notebook itself is written at most every 10 s while it runs, and at the
  end (:mod:`skinhelpers.run.engine`).
* **Outcomes, not tracebacks.** :func:`execute` returns a dict saying how the notebook
  ended: ``ok``, ``failed`` (a cell raised), ``kernel_died`` (killed, e.g. out of memory),
  ``kernel_missing`` (the kernel could not start), ``timeout`` (``timeout_s`` passed: the
  kernel is interrupted, then killed 30 s later) or ``interrupted`` (Ctrl-C), with the
  cell that was running. Only ``interrupted`` is re-raised (as ``KeyboardInterrupt``)
  after the record is made, so the caller can stop the chain.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from skinhelpers.run import kernel_start
from skinhelpers.run.kernel_start import KERNEL_BOOT

log = logging.getLogger(__name__)

KILL_GRACE_S = 30.0  # after a timeout: seconds between the interrupt and the kill


class RunKernelManager(AsyncKernelManager):
    """A kernel manager that always starts ``sys.executable``'s ipykernel over IPC, with
    the quick exit of :data:`~skinhelpers.run.kernel_start.KERNEL_BOOT`, forked from the
    run's preload server when there is one (:mod:`skinhelpers.run.kernel_start`)."""

    def __init__(self, *args, **kwargs):
        kwargs["transport"] = "ipc" if os.name == "posix" else "tcp"  # no ipc on Windows
        if kwargs["transport"] == "ipc":
            # socket files of its own: jupyter_client's default, kernel-ipc-1..5 in the
            # working directory (the notebooks' folder), is shared by every kernel started
            # from that folder at once (two test workers, two runs), and such a kernel took
            # another's sockets and never answered ("Kernel didn't respond in 60 seconds")
            name = f"skinlab-kernel-{uuid.uuid4().hex[:16]}-ipc"
            kwargs.setdefault("ip", os.path.join(tempfile.gettempdir(), name))
        super().__init__(*args, **kwargs)
        self._kernel_spec = KernelSpec(
            argv=[
                sys.executable,
                "-c",
                KERNEL_BOOT,
                "-f",
                "{connection_file}",
                "--HistoryManager.enabled=False",
            ],
            display_name=f"Python ({sys.executable})",
            language="python",
            interrupt_mode="signal",
            metadata={"debugger": False},
        )
        RunKernelManager.latest = self

    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None:  # jupyter_client's local provisioner, which may fork
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = kernel_start.ForkingProvisioner(
                kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
            )
        return await super()._async_pre_start_kernel(**kw)

    latest: RunKernelManager | None = None

    def kernel_pid(self) -> int | None:
        """The process id of the running kernel, or None."""
        prov = getattr(self, "provisioner", None)
        return getattr(prov, "pid", None) if prov is not None else None


class Tee:
    """A write-only stream that copies to the terminal and to a log file.

    The log gets each carriage-return redraw as its own line (what is left after the
    last ``\\r`` of a line), so it stays readable in ``less`` and in the report.
    """

    def __init__(self, terminal, log):
        self.terminal, self.log = terminal, log

    def write(self, text: str) -> int:
        self.terminal.write(text)
        self.terminal.flush()
        self.log.write(text.replace("\r\n", "\n").replace("\r", "\n"))
        self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()
        self.log.flush()


def signal_kernel(sig) -> bool:
    """Send ``sig`` to the latest kernel (it runs in its own session, so a Ctrl-C in the
    terminal does not reach it); False when there is no kernel process to signal."""
    km = RunKernelManager.latest
    pid = km.kernel_pid() if km is not None else None
    if not pid:
        return False
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            return False
    return True


class _CtrlC:
    """While a notebook runs, Ctrl-C kills its kernel (so the cell stops for sure and
    nbclient reports a dead kernel, recorded as ``interrupted``) instead of raising
    KeyboardInterrupt wherever the client's event loop happens to be. With no kernel
    running yet, or on a second Ctrl-C, it raises KeyboardInterrupt as usual."""

    def __init__(self):
        self.pressed = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pressed or not signal_kernel(signal.SIGKILL):
            raise KeyboardInterrupt
        self.pressed = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class _Watchdog:
    """Interrupt the kernel after ``timeout_s``, kill it ``KILL_GRACE_S`` later."""

    def __init__(self, timeout_s: float | None):
        self.fired = False
        self._timers = []
        if timeout_s and timeout_s > 0:
            self._timers = [
                threading.Timer(timeout_s, self._signal, (signal.SIGINT,)),
                threading.Timer(timeout_s + KILL_GRACE_S, self._signal, (signal.SIGKILL,)),
            ]
        for t in self._timers:
            t.daemon = True
            t.start()

    def _signal(self, sig) -> None:
        self.fired = True
        signal_kernel(sig)

    def cancel(self) -> None:
        for t in self._timers:
            t.cancel()


def _running_cell(out: Path) -> dict:
    """The cell that was running when a notebook stopped: the last one papermill started."""
    import nbformat  # local: notebooks extra: only the runner/report need it

    try:
        nb = nbformat.read(out, as_version=4)
    except Exception:  # noqa: BLE001 - nothing saved yet (kernel never started)
        return {}
    started = [
        (i, c)
        for i, c in enumerate(nb.cells)
        if c.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return {}
    i, cell = started[-1]
    first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
    return {"cell": cell.get("execution_count"), "cell_index": i, "cell_source": first[:120]}


def _mark_stopped(out: Path, cell_index: int | None, ename: str, evalue: str) -> None:
    """Put an error output on the cell where a notebook stopped (the report shows it)."""
    import nbformat  # local: notebooks extra: only the runner/report need it

    try:
        nb = nbformat.read(out, as_version=4)
        if cell_index is None or cell_index >= len(nb.cells):
            return
        cell = nb.cells[cell_index]
        if cell.cell_type != "code":
            return
        cell.outputs.append(
            nbformat.v4.new_output(
                "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
            )
        )
        nb.metadata.setdefault("papermill", {})["exception"] = True
        nbformat.write(nb, out)
    except Exception as e:  # noqa: BLE001 - the record in run.json is what counts
        log.error(f"(could not mark the stopped cell in {out}: {e})")


#: jupyter_client's words when a new kernel client reads a message signed with another key
#: (two kernels started at once on a shared machine can race for the same ports); raised
#: while the kernel starts, before any cell ran, so the notebook is simply started again
KERNEL_START_RACE = ("Invalid Signature", "Duplicate Signature", "Unsigned Message")
KERNEL_START_TRIES = 3


def batch_kernel() -> dict:
    """papermill's ``execute_notebook`` arguments that run a notebook as a batch run does:
    :class:`RunKernelManager`'s kernel and the engine that writes the executed notebook
    every 10 s (:mod:`skinhelpers.run.engine`)."""
    from skinhelpers.run import engine  # local: imports papermill

    return {
        "kernel_name": "skinlab-run",
        "language": "python",
        "kernel_manager_class": RunKernelManager,
        "engine_name": engine.register(),
    }


def _start_retried(run, *args, **kwargs):
    """``run(*args, **kwargs)``, started again (up to :data:`KERNEL_START_TRIES` times) when
    the kernel's start fails with one of :data:`KERNEL_START_RACE`; anything else raises."""
    for attempt in range(1, KERNEL_START_TRIES + 1):
        try:
            return run(*args, **kwargs)
        except ValueError as e:
            if attempt == KERNEL_START_TRIES or not any(w in str(e) for w in KERNEL_START_RACE):
                raise
            log.warning(f"the kernel did not start ({e}); starting it again ({attempt + 1})")
            time.sleep(1.0 * attempt)


def execute(
    nb: Path, out: Path, parameters: dict, log_path: Path, timeout_s: float | None = None
) -> dict:
    """Run ``nb`` into ``out``; return ``{"status", "seconds", ...}`` (see module doc)."""
    import papermill as pm
    from jupyter_client.kernelspec import (
        NoSuchKernel,  # local: notebooks extra: only the runner needs it
    )
    from nbclient.exceptions import (
        DeadKernelError,  # local: notebooks extra: only the runner needs it
    )
    from papermill.exceptions import (
        PapermillExecutionError,  # local: heavy, notebooks extra: only the pipeline needs it
    )

    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {"status": "ok"}
    interrupted = None
    raised_in_cell = False  # the executed copy already shows the traceback
    with open(log_path, "a", encoding="utf-8") as log:  # a resumed notebook keeps its past
        log.write(f"----- {nb.name} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        watchdog = _Watchdog(timeout_s)
        ctrl_c = _CtrlC()
        try:
            with ctrl_c:
                _start_retried(
                    pm.execute_notebook,
                    str(nb),
                    str(out),
                    parameters=parameters,
                    cwd=str(nb.parent),
                    progress_bar=False,
                    log_output=False,
                    stdout_file=Tee(sys.stdout, log),
                    stderr_file=Tee(sys.stderr, log),
                    **batch_kernel(),
                )
        except PapermillExecutionError as e:
            kind = "interrupted" if ctrl_c.pressed else "timeout" if watchdog.fired else "failed"
            raised_in_cell = True
            result = {
                "status": kind,
                "cell": e.exec_count,
                "cell_index": e.cell_index,
                "error": f"{e.ename}: {e.evalue}",
            }
            if ctrl_c.pressed:
                interrupted = KeyboardInterrupt()
                result["error"] = "interrupted (Ctrl-C)"
        except DeadKernelError as e:
            if ctrl_c.pressed:
                interrupted = KeyboardInterrupt()
                result = {"status": "interrupted", **_running_cell(out)}
                result["error"] = "interrupted (Ctrl-C)"
            else:
                kind = "timeout" if watchdog.fired else "kernel_died"
                result = {
                    "status": kind,
                    **_running_cell(out),
                    "error": f"the kernel died ({e}); out of memory or killed?",
                }
        except (NoSuchKernel, FileNotFoundError, PermissionError) as e:
            result = {"status": "kernel_missing", "error": f"{type(e).__name__}: {e}"}
        except KeyboardInterrupt as e:
            # a Ctrl-C that lands inside the client's event loop can skip nbclient's
            # clean-up: the kernel would keep running the cell (and hold our stdout open)
            signal_kernel(signal.SIGKILL)
            interrupted = e
            result = {
                "status": "interrupted",
                **_running_cell(out),
                "error": "interrupted (Ctrl-C)",
            }
        except RuntimeError as e:  # nbclient: "Kernel died before replying to kernel_info"
            if "kernel" not in str(e).lower():
                raise
            result = {"status": "kernel_missing", "error": f"{type(e).__name__}: {e}"}
        finally:
            watchdog.cancel()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if result["status"] == "timeout":
        result["error"] = f"no result after the --timeout of {timeout_s:g} s"
    if result["status"] in {"kernel_died", "timeout", "interrupted"} and not raised_in_cell:
        if "cell_index" not in result:
            result.update(_running_cell(out))
        _mark_stopped(out, result.get("cell_index"), result["status"], result["error"])
    if interrupted is not None:
        raise KeyboardInterrupt(result) from None
    return result
