"""tornado's ``fork_processes`` semantics for gunicorn's arbiter.

Every worker holds a task id ``0 .. N-1`` that its replacement inherits; a crash loop stops
the server once more than ``max_restarts`` workers have had to be restarted; a worker that
exits 0 of its own accord is not replaced, and the server exits 0 once every task is done.
Turn it on from a gunicorn config file::

    import gunicorn_tornadofork

    def on_starting(server):
        gunicorn_tornadofork.install(server, max_restarts=100)
"""

from __future__ import annotations

import enum
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from gunicorn.arbiter import Arbiter

from . import arbiter as _arbiter
from .arbiter import GIVE_UP_STATUS, TASKS_FAILED_STATUS
from .exits import WORKER_BOOT_ERROR
from .options import DEFAULT_MAX_RESTARTS, OptionError, Options
from .worker import ENV_VAR, FORK_BLOCKED, finish_task, task_id

if TYPE_CHECKING:
    from .prometheus import Exporter

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_RESTARTS",
    "ENV_VAR",
    "GIVE_UP_STATUS",
    "TASKS_FAILED_STATUS",
    "OptionError",
    "finish_task",
    "install",
    "on_starting",
    "task_id",
]


def install(server: Any = None, *args: Any, **options: Any) -> None:
    """Activate the plugin on ``server``, the arbiter that gunicorn's ``on_starting`` hook gets.

    Accepted options: ``max_restarts`` (int >= 0, default 100), ``restart_window``
    (seconds > 0 or None), ``max_task_restarts`` (int >= 0 or None), ``backoff`` (seconds,
    default 0), ``backoff_max`` (seconds, default 30), ``task_id_offset`` (int >= 0, default 0),
    ``exit_policy`` (a list of ``(match, action)`` rules, default none), ``task_cap_action``
    (``"give_up"``, the default, or ``"fail_task"``), ``max_failed_tasks`` (int >= 0 or None),
    ``prometheus`` (bool, default False: prometheus_client's multiprocess files keyed by task
    id, and the arbiter's metrics beside them); ints at most 2**63 - 1, seconds at most 10**9.
    A bad option, or a call anywhere but ``on_starting``, is logged as one line in gunicorn's
    error log and ends the server with status 1 (the master removes its pidfile); called in
    a worker, it ends that worker with gunicorn's boot-failure status 3 instead.
    """
    global _refusing
    if _refusing:
        return  # a refusal is already ending this process (install() in on_exit, child_exit)
    # The arbiter running on_starting is up the stack; a copy of it or another object is not.
    arbiter = _calling_arbiter() or (server if isinstance(server, Arbiter) else None)
    phase = _phase(arbiter)
    try:
        # The first problem in this order is the one named: where it runs, then what it got.
        if phase in _MISUSE:
            raise OptionError(_MISUSE[phase].format(pid=os.getpid()))
        if args:
            raise OptionError(
                f"install() takes the arbiter and keyword options only, got {len(args)} more "
                "positional argument(s)"
            )
        if arbiter is not server:
            raise OptionError(
                f"install() needs the gunicorn arbiter that on_starting gets, got {type(server).__name__}"
            )
        if isinstance(server, _arbiter.TornadoForkArbiter):
            raise OptionError("install() was already called on this arbiter")
        parsed = Options.parse(options)
        exporter = _exporter(arbiter, parsed)
    except OptionError as exc:
        _refusing = True
        _refuse(arbiter, phase, exc)
    _arbiter.install(arbiter, parsed, exporter)
    changed = parsed.changed()
    arbiter.log.info(
        "gunicorn_tornadofork: %d tasks%s", arbiter.num_workers, "".join(", " + c for c in changed)
    )


def _exporter(arbiter: Any, options: Options) -> Exporter | None:
    """With ``prometheus=True``: the checked metrics directory, prepared for the workers."""
    if not options.prometheus:
        return None
    # Imported only when asked for: a master without it does not carry its code.
    from . import prometheus as _prometheus

    cfg = arbiter.cfg
    workers = None
    if (cfg.uid, cfg.gid) != (os.geteuid(), os.getegid()):  # gunicorn's `user`, `group`
        workers = (cfg.uid, _prometheus.worker_groups(cfg.uid, cfg.gid, bool(cfg.initgroups)))
    return _prometheus.Exporter.open(options, _prometheus.directory(), workers)


def on_starting(server: Any) -> None:
    """gunicorn's ``on_starting`` hook that installs the plugin with default options."""
    install(server)


class _Phase(enum.Enum):
    """Where in gunicorn's life cycle ``install()`` was called."""

    NO_ARBITER = "no arbiter"  # not under a gunicorn arbiter at all
    BUILDING = "building"  # in Arbiter.__init__ (nworkers_changed): no pid, no pidfile yet
    STARTING = "starting"  # on_starting: pidfile written, no signal handler, no listener
    RUNNING = "running"  # the master after on_starting: when_ready, pre_fork, on_reload ...
    CHILD = "child"  # a process the master forked: post_fork, post_worker_init ...


_MISUSE = {
    _Phase.BUILDING: "install() must be called from on_starting, not before the arbiter starts",
    _Phase.RUNNING: "install() must be called from on_starting, not after the arbiter has started",
    _Phase.CHILD: "install() must be called from on_starting in the arbiter, not in a worker (pid {pid})",
}

# Set once a refusal is under way: hooks that run while the process ends (on_exit, child_exit,
# worker_exit) may call install() again, which must not start a second refusal.
_refusing = False


def _phase(arbiter: Any) -> _Phase:
    """Where ``arbiter`` is in its life cycle, seen from the calling process.

    on_starting runs in Arbiter.start() after ``pid`` and the pidfile are set and before
    init_signals() and the listeners; every later master hook sees the arbiter's SIGCHLD
    handler (or its listeners); a worker, or any other child of the master, has another pid.
    """
    if arbiter is None:
        return _Phase.NO_ARBITER
    pid = getattr(arbiter, "pid", None)
    if pid is None:
        return _Phase.BUILDING
    if pid != os.getpid():
        return _Phase.CHILD
    handler = signal.getsignal(signal.SIGCHLD)
    if getattr(handler, "__self__", None) is arbiter or arbiter.LISTENERS:
        return _Phase.RUNNING
    return _Phase.STARTING


def _calling_arbiter() -> Any:
    """The arbiter whose method (start, spawn_worker, reload ...) is up the calling stack."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Arbiter):
            return candidate
        frame = frame.f_back
    return None


def _refuse(arbiter: Any, phase: _Phase, exc: OptionError) -> NoReturn:
    """End the process that called install() wrongly, as suits where it runs."""
    if getattr(arbiter, "log", None) is None:
        print(f"gunicorn_tornadofork: {exc}", file=sys.stderr)
        raise SystemExit(1)
    arbiter.log.error("gunicorn_tornadofork: %s", exc)
    if phase is _Phase.CHILD:
        # The pidfile is the master's: a worker leaves it alone. gunicorn's boot-failure
        # status makes the master stop its workers, remove the pidfile and exit 3.
        raise SystemExit(WORKER_BOOT_ERROR)
    if phase is _Phase.RUNNING:
        # Listeners, signal handlers and maybe workers exist: gunicorn's own halt stops the
        # workers, closes (and unlinks) the sockets, removes the pidfile, runs on_exit, exits.
        # In pre_fork the plugin holds back the stop signals (and, on gunicorn 23, SIGCHLD,
        # by which it reaps) around the fork: the halt needs them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_BLOCKED | {signal.SIGCHLD})
        arbiter.halt(exit_status=1)
    pidfile = getattr(arbiter, "pidfile", None)
    if pidfile is not None:
        pidfile.unlink()
    raise SystemExit(1)
