"""The worker's side: its task id, its process title, parent-death, and its end-of-life report.

The arbiter marks a fork with :func:`forking`; the child then learns its task id before any
gunicorn hook runs. As the worker ends, it writes a short report (finished, recycled, or
stopped by a signal) at the start of its heartbeat file, which gunicorn creates for every
worker and otherwise uses only for its timestamps; the arbiter reads it when it reaps.
"""

from __future__ import annotations

# signal's C functions, without the enum conversions its Python wrappers add to every call
# (for a handler that is no Handlers member, a caught ValueError each time): the arbiter
# masks signals around every fork, and the new worker resets handlers before it is ready.
import _signal  # type: ignore[import-not-found]
import functools
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import setproctitle

from .exits import REPORT_FINISHED, REPORT_RECYCLED, signal_report

ENV_VAR = "GUNICORN_TASK_ID"
_REPORT_SIZE = 8

_task_id: int | None = None
_worker: Any = None  # the gunicorn worker object running in this process
_finish_requested = False
_stop_signal: int | None = None
_recycled = False  # the worker had ended its loop on its own when the timeout abort came

# Set in the arbiter for the length of one fork: what the child needs first.
_forking_task: int | None = None
_arbiter_pid = 0
_saved_sigmask: set[int] | None = None  # the mask to restore after the fork
_set_pdeathsig: Callable[[], None] | None = None
# SIGALRM's disposition before the arbiter could take SIGALRM for its backoff timer: what
# a worker of plain gunicorn starts with.
_alarm_disposition: Any = None
# Where the arbiter's own signal handlers are defined (the backoff's SIGALRM handler).
_ARBITER_MODULE = __name__.rpartition(".")[0] + ".arbiter"

# gunicorn's stop handlers (sync, gthread, gevent, eventlet, tornado workers) and the
# asyncio-loop ones of its ASGI worker, with the signal each stands for.
_STOP_HANDLERS = {
    "handle_exit": signal.SIGTERM,
    "handle_quit": signal.SIGQUIT,
    "handle_abort": signal.SIGABRT,
    "handle_exit_signal": signal.SIGTERM,
    "handle_quit_signal": signal.SIGQUIT,
    "handle_abort_signal": signal.SIGABRT,
}


def task_id() -> int | None:
    """The task id of the calling worker process; None outside a worker."""
    return _task_id


def finish_task() -> None:
    """End the calling worker's task after the current request.

    The worker shuts down gracefully, as on SIGTERM, exits with status 0, and the arbiter
    does not replace it; once every task has finished, the server exits 0. This holds also
    when the app ignores SIGTERM. Called from the ``post_fork`` hook, the worker ends before
    it boots. Raises RuntimeError outside a worker of a server with the plugin installed.
    """
    global _finish_requested
    if _worker is None:
        if _task_id is None:
            raise RuntimeError("finish_task() must be called inside a gunicorn_tornadofork worker")
        _finish_requested = True  # post_fork: the worker's init_process sees it first thing
        return
    _finish_requested = True
    _write_report(_worker, REPORT_FINISHED)
    # The worker's own SIGTERM handler is the graceful stop every worker class implements
    # (it also wakes a loop that waits for its next check of `alive`).
    stop = signal.SIGTERM
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        # The app ignores SIGTERM. Every class but uvicorn's leaves its loop once `alive`
        # is cleared, after the current request; uvicorn never reads `alive`, and SIGINT is
        # its other graceful stop (it raises the signal again once it has shut down).
        if _runs_uvicorn(_worker):
            stop = signal.SIGINT
        elif hasattr(_worker, "alive"):
            _worker.alive = False
    os.kill(os.getpid(), stop)


def enable(arbiter_pid: int) -> None:
    """Prepare this (arbiter) process: the at-fork hook, and parent-death where Linux has it."""
    global _arbiter_pid, _set_pdeathsig, _alarm_disposition
    _arbiter_pid = arbiter_pid
    if _set_pdeathsig is None:
        _alarm_disposition = _signal.getsignal(_SIGALRM)  # as _signal.signal() takes it back
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _set_pdeathsig = _pdeathsig_setter() or (lambda: None)


#: Signals held back around a worker's fork: stop signals that reach the new worker before
#: it has reset the arbiter's handlers would be lost (CPython drops signals pending at fork,
#: and the arbiter's own handler only queues them); held, they reach the worker once it runs
#: with the default disposition, which stops it.
FORK_BLOCKED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


_FORK_BLOCKED_SIGCHLD = FORK_BLOCKED | {signal.SIGCHLD}


def fork_begin(task: int, block_sigchld: bool = True) -> None:
    """Before the arbiter's fork of the worker for ``task``: the child takes that id, stop
    signals wait until it can act on them, and with ``block_sigchld`` SIGCHLD waits until
    the parent has recorded the new pid. :func:`fork_end` must follow, whatever happens."""
    global _forking_task, _saved_sigmask
    _forking_task = task
    _saved_sigmask = _signal.pthread_sigmask(
        signal.SIG_BLOCK, _FORK_BLOCKED_SIGCHLD if block_sigchld else FORK_BLOCKED
    )


def fork_end() -> None:
    """After the arbiter's fork (or its failure): the signal mask as it was before."""
    global _forking_task, _saved_sigmask
    _forking_task = None
    if _saved_sigmask is not None:
        _signal.pthread_sigmask(signal.SIG_SETMASK, _saved_sigmask)
        _saved_sigmask = None


def adopt(worker: Any, task: int) -> None:
    """Give a new gunicorn worker object its task id and wrap its ``init_process``,
    ``init_signals`` and ``run``."""
    worker.task_id = task
    worker.init_process = functools.partial(_run, worker, worker.init_process)
    # Every worker class reaches init_signals() from gunicorn's base init_process(), right
    # after it dropped privileges (`user`, `group`), which cleared the parent-death signal.
    worker.init_signals = functools.partial(_rearm_parent_death, worker.init_signals)
    worker.run = functools.partial(_loop, worker, worker.run)


def read_report(worker: Any) -> bytes:
    """The report a worker left in its heartbeat file (empty if none); arbiter side."""
    try:
        return os.pread(worker.tmp.fileno(), _REPORT_SIZE, 0)
    except (OSError, ValueError):
        return b""


# Arbiter handlers a new worker would keep until its class installs its own: there, a stop
# would be queued for an arbiter loop that never runs in the worker, and SIGCHLD would reap
# the worker's own children (gunicorn resets these to the defaults too, a little later).
_RESET_SIGNALS = tuple(int(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD))
_SIG_DFL, _SIG_SETMASK, _SIGALRM = int(signal.SIG_DFL), int(signal.SIG_SETMASK), int(signal.SIGALRM)


def _after_fork_in_child() -> None:
    global _task_id, _forking_task
    if _forking_task is None:
        return
    _task_id, _forking_task = _forking_task, None
    os.environ[ENV_VAR] = str(_task_id)
    for signum in _RESET_SIGNALS:
        _signal.signal(signum, _SIG_DFL)
    alarm_handler = _signal.getsignal(_SIGALRM)
    if _alarm_disposition is not None and getattr(alarm_handler, "__module__", None) == _ARBITER_MODULE:
        # The arbiter's backoff timer handler would otherwise swallow the app's alarm();
        # a handler someone else installed in the master stays, as in plain gunicorn.
        _signal.signal(_SIGALRM, _alarm_disposition)
    if _saved_sigmask is not None:
        _signal.pthread_sigmask(_SIG_SETMASK, _saved_sigmask)
    if _set_pdeathsig is not None:
        _set_pdeathsig()
    if os.getppid() != _arbiter_pid:
        os._exit(1)  # the arbiter died before parent-death was armed


def _rearm_parent_death(init_signals: Callable[[], None]) -> None:
    """Arm parent-death again (changing credentials disarmed it), then the class's handlers."""
    if _set_pdeathsig is not None:
        _set_pdeathsig()
    if os.getppid() != _arbiter_pid:
        os._exit(1)  # the arbiter died while parent-death was disarmed
    init_signals()


def _loop(worker: Any, run: Callable[[], None]) -> None:
    """The worker's main loop, not entered if a stop signal came while the app loaded.

    Its class's handler has already cleared ``alive``: every loop would end at once, but
    gunicorn's tornado worker sets ``alive`` again as its loop starts, which would undo the
    stop and leave the worker serving until the arbiter kills it.
    """
    if _stop_signal is not None and not getattr(worker, "alive", True):
        return
    run()


def _run(worker: Any, init_process: Callable[[], None]) -> None:
    """The worker's ``init_process``, titled with its task id and reporting how it ended."""
    global _worker
    _worker = worker
    setproctitle.setproctitle(f"{setproctitle.getproctitle()} task {worker.task_id}")
    if _finish_requested:
        # finish_task() from the post_fork hook: the task ends before the worker boots.
        _write_report(worker, REPORT_FINISHED)
        raise SystemExit(0)
    uvicorn = _runs_uvicorn(worker)
    if not uvicorn:
        # uvicorn's server handles SIGTERM and SIGINT itself (and raises them again once it
        # has stopped); the SIGQUIT handler its workers add is gunicorn's base handle_exit,
        # which only clears `alive`, a flag uvicorn never reads: that signal stops nothing.
        for name, signum in _STOP_HANDLERS.items():
            handler = getattr(worker, name, None)
            if callable(handler):
                setattr(worker, name, functools.partial(_note_signal, signum, handler))
    ending = b""
    try:
        init_process()
        if getattr(worker, "alive", False) and not uvicorn:
            # gunicorn's workers clear `alive` before they end their loop for max_requests
            # or a code reload; a loop that ended without that failed (gunicorn 24's ASGI
            # worker returns when the app's lifespan startup fails).
            worker.log.error("Worker loop ended without a stop or a recycle (pid: %s)", os.getpid())
            raise SystemExit(1)
        ending = REPORT_RECYCLED  # the worker ended its own loop: max_requests or code reload
    except SystemExit as exc:
        if exc.code in (0, None):
            # aiohttp's worker leaves its loop with sys.exit(0) after max_requests: a
            # worker that cleared `alive` itself recycled; with `alive` set, the app ended it.
            ending = REPORT_RECYCLED if _left_loop_itself(worker) else REPORT_FINISHED
        raise
    finally:
        if _finish_requested:
            ending = REPORT_FINISHED
        elif _stop_signal is not None:
            ending = signal_report(_stop_signal)
        elif _recycled:
            ending = REPORT_RECYCLED
        if ending:
            _write_report(worker, ending)
        if getattr(worker.cfg, "reuse_port", False):
            _close_listeners(worker)


def _close_listeners(worker: Any) -> None:
    """Close the listening sockets of a worker whose loop is over.

    With ``reuse_port`` (gunicorn 24 and later) each worker binds a socket of its own in
    the kernel's group, which hands each new connection to one of the group's sockets. A
    worker's socket would stay open until the interpreter's teardown (this module holds
    the worker), all the while taking connections that no one accepts and that are reset
    when it closes. Closed now, they go to the sockets of the workers still serving."""
    for listener in getattr(worker, "sockets", None) or ():
        with suppress(OSError, AttributeError):
            listener.close()


def _left_loop_itself(worker: Any) -> bool:
    """Whether ``worker`` cleared its own ``alive`` flag: no stop signal, no finish_task()."""
    return not getattr(worker, "alive", True) and _stop_signal is None and not _finish_requested


def _runs_uvicorn(worker: Any) -> bool:
    """Whether ``worker`` is one of uvicorn's gunicorn workers (or a subclass of one)."""
    return any(
        cls.__module__.partition(".")[0] in ("uvicorn", "uvicorn_worker") for cls in type(worker).__mro__
    )


def _note_signal(default: int, handler: Callable[..., Any], *args: Any) -> Any:
    global _stop_signal, _recycled
    signum = args[0] if args and isinstance(args[0], int) else default
    if signum == signal.SIGABRT and _worker is not None and _left_loop_itself(_worker):
        # The timeout abort came after the worker had ended its loop for max_requests or a
        # code reload: only its drain or its exit outlasted `timeout`. Report the recycle
        # now, as the abort may end the process before any finally block runs.
        _recycled = True
        _write_report(_worker, REPORT_RECYCLED)
    else:
        _stop_signal = signum
    return handler(*args)


def _write_report(worker: Any, report: bytes) -> None:
    try:
        fd = worker.tmp.fileno()
        before = os.fstat(fd)
        os.pwrite(fd, report.ljust(_REPORT_SIZE, b"\0"), 0)
        # Writing moves the file's times, which are gunicorn's heartbeat: a report is not
        # a sign of life, so put them back as they were.
        os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
    except (OSError, ValueError):
        pass


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A function that makes the calling process get SIGKILL when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None  # gunicorn's own check of the parent pid stays the fallback
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    # A partial, not a lambda: one Python frame less in every new worker.
    setter: Callable[[], None] = functools.partial(prctl, pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    return setter
