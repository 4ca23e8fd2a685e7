"""The gunicorn-facing layer: a mixin laid over the running arbiter's class by ``install()``.

It overrides only where gunicorn decides which worker to start, stop or replace; every
decision is taken by the pure :class:`~gunicorn_tornadofork.tasks.TaskTable` and
:func:`~gunicorn_tornadofork.exits.classify`. What the arbiter shows of its tasks (title,
USR1 lines, control socket listing, statsd, Prometheus) is
:class:`~gunicorn_tornadofork.observe.Observer`'s, fed with the same events.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gunicorn.arbiter as gunicorn_arbiter
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from . import worker as worker_side
from .exits import STOP_SIGNALS, Ending, classify
from .observe import Observer, statsd
from .options import Options, available_cpus
from .policy import GIVE_UP_STATUS, TASKS_FAILED_STATUS, Action
from .roll import Roll
from .tasks import Outcome, TaskTable

if TYPE_CHECKING:
    from .prometheus import Exporter

__all__ = ["GIVE_UP_STATUS", "TASKS_FAILED_STATUS", "TornadoForkArbiter", "install"]

GIVE_UP_REASON = "Too many child restarts, giving up"
POLICY_GIVE_UP_REASON = "An exit_policy rule gave up"
FAILED_TASKS_REASON = "Too many failed tasks, giving up"
FINISHED_REASON = "All tasks finished"
TASKS_FAILED_REASON = "No task left to run, and tasks failed"

_POLL_SECONDS = 0.01
# gunicorn 23 reaps workers inside its SIGCHLD handler, which could then run between the
# fork and the table's record of the new pid; later versions only queue SIGCHLD.
_REAPS_IN_SIGCHLD_HANDLER = not hasattr(Arbiter, "signal_chld")
# Every signal the arbiter handles.
_ARBITER_SIGNALS = frozenset({*Arbiter.SIGNALS, signal.SIGCHLD, signal.SIGALRM})
# The arbiter's own stop signals: graceful (TERM) and quick (INT, QUIT) shutdown.
_MASTER_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


@dataclass(frozen=True)
class _Reaped:
    pid: int
    status: int
    report: bytes
    aborted: bool


@dataclass
class _State:
    options: Options
    table: TaskTable
    observe: Observer  # the title, USR1, the control socket's listing, statsd, Prometheus
    # Filled by reap_workers (a signal handler on gunicorn 23), drained by the main loop.
    reaped: deque[_Reaped] = field(default_factory=deque)
    # True while gunicorn's reload() runs its own "spawn a new set" loop.
    reloading: bool = False
    # The reload's rolling replacement, while one runs.
    roll: Roll | None = None
    # Workers asked to stop (scale-down, reload): pid -> when SIGKILL is due.
    kill_due: dict[int, float] = field(default_factory=dict)


class _NotingWaitpid:
    """``os`` as gunicorn's arbiter module sees it while it reaps: ``waitpid`` also tells the
    plugin about each child it reaps, so that gunicorn's own reaping runs unchanged. One per
    arbiter, made once."""

    def __init__(self, arbiter: TornadoForkArbiter) -> None:
        self._arbiter = arbiter

    def __getattr__(self, name: str) -> Any:
        # Kept as an attribute of this object: gunicorn's next reaping finds it at once.
        value = getattr(os, name)
        setattr(self, name, value)
        return value

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        reaped = os.waitpid(pid, options)
        if reaped[0]:
            self._arbiter._note_reaped(*reaped)
        return reaped


class _RollStarted(Exception):
    """Ends gunicorn's ``reload()`` once the roll has started: what follows it there (on
    gunicorn 24 and later) is a wait of up to ``graceful_timeout`` for the old workers, which
    the roll replaces with a state of the main loop."""


class TornadoForkArbiter(Arbiter):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's arbiter with tornado's ``fork_processes`` semantics."""

    _tornadofork: _State
    # Attributes of gunicorn's Arbiter that this layer uses.
    WORKERS: dict[int, Any]
    cfg: Any
    log: Any
    worker_class: Any
    num_workers: int
    master_pid: int

    # -- spawning ---------------------------------------------------------------------

    def spawn_workers(self) -> None:
        """Start a worker for every task that needs one, at once: no sleep between forks."""
        while self.spawn_worker() is not None:
            pass

    def spawn_worker(self) -> int | None:
        """Start a worker for the lowest task id that needs one; None if none does."""
        state = self._tornadofork
        if state.reloading:
            return None
        task = state.table.next_pending()
        if task is None:
            return None
        worker_class = self.worker_class

        def make_worker(*args: Any, **kwargs: Any) -> Any:
            worker = worker_class(*args, **kwargs)
            worker_side.adopt(worker, task)
            return worker

        self.worker_class = make_worker
        # Plain calls rather than context managers: this runs between a reap and the fork
        # of the replacement, where every page the master writes is copied (copy-on-write).
        # SIGCHLD too on every version: gunicorn 27 restarts its control socket's thread as
        # the fork returns, and the thread keeps this mask (see _start_control_server).
        worker_side.fork_begin(task, block_sigchld=True)
        try:
            prometheus = state.observe.prometheus
            if prometheus is None:
                pid: int = super().spawn_worker()
                state.table.spawned(task, pid)
            else:
                with prometheus.forking(task):
                    pid = super().spawn_worker()
                    state.table.spawned(task, pid)
                    state.observe.spawned(task, pid)
        finally:
            worker_side.fork_end()
            self.worker_class = worker_class
        return pid

    # -- stopping ---------------------------------------------------------------------

    def kill_worker(self, pid: int, sig: int) -> None:
        """Signal a worker, remembering that the arbiter asked it to stop."""
        if sig in STOP_SIGNALS:
            self._tornadofork.table.stop_requested(pid)
        super().kill_worker(pid, sig)

    # -- reaping and deciding ---------------------------------------------------------

    def reap_workers(self) -> None:
        """gunicorn's own reaping (its log lines and ``child_exit``), with each worker's wait
        status and report noted for the main loop as it is reaped. On gunicorn 23, which
        reaps inside its SIGCHLD handler, a SIGCHLD that comes meanwhile waits until the
        reaping is done: its handler would re-enter the log line being written."""
        module = gunicorn_arbiter.os
        noting = self.__dict__.get("_tornadofork_waitpid")
        if noting is None:
            noting = self._tornadofork_waitpid = _NotingWaitpid(self)
        gunicorn_arbiter.os = noting
        try:
            with _sigchld_held():
                while True:
                    try:
                        super().reap_workers()
                        return
                    except HaltServer:
                        # gunicorn halts on a worker's status 3 or 4 from inside its reaping
                        # (on 23, inside the SIGCHLD handler, and again from halt() if a
                        # second worker fails, which exits 1). Reap on; the main loop halts
                        # on the same judgment once, with gunicorn's status and reason.
                        continue
        finally:
            gunicorn_arbiter.os = module

    def _note_reaped(self, pid: int, status: int) -> None:
        # Called between gunicorn's waitpid() and its close of the worker's heartbeat file,
        # where the report is.
        worker = self.WORKERS.get(pid)
        if worker is not None:
            report = worker_side.read_report(worker)
            self._tornadofork.reaped.append(_Reaped(pid, status, report, bool(worker.aborted)))

    def manage_workers(self) -> None:
        """Judge the reaped workers, retire out-of-range tasks, move a reload's roll on,
        start the tasks that need a worker. Called from gunicorn's ``reload()``, it starts
        the roll and ends that ``reload()``."""
        state = self._tornadofork
        reloading, state.reloading = state.reloading, False
        self._kill_overdue()
        if (
            not reloading
            and state.roll is None
            and not state.reaped
            and self.num_workers == state.table.size
            and state.table.settled()
            and state.options.restart_window is None
        ):
            # Nothing was reaped, nothing resized, every task has its worker or has finished,
            # none is waiting or being stopped: nothing is due but gunicorn's own upkeep.
            super().manage_workers()
            return
        self._settle()
        for pid in state.table.resize(self.num_workers):
            self._stop(pid)
        if not self._stop_pending():
            self._halt_if_ended()
            if reloading:
                state.roll = Roll.start(self._running(), state.table.size, state.roll)
            self._roll_on()
        self.spawn_workers()
        # gunicorn's own upkeep (its worker-count metrics) runs whenever its rule "kill
        # the oldest workers beyond num_workers" cannot fire: it would pick the wrong ones.
        if len(self.WORKERS) <= self.num_workers:
            super().manage_workers()
        self._show_state()
        if reloading:
            raise _RollStarted

    def _running(self) -> dict[int, int]:
        """Task id -> pid of each worker in range not asked to stop."""
        table = self._tornadofork.table
        live = table.live()
        return {task: live[task] for task in table.running()}

    def _roll_on(self) -> None:
        """Ask the reload's next old workers to stop; each successor starts as its old worker
        is reaped. The roll ends once every old worker is gone."""
        state = self._tornadofork
        roll = state.roll
        if roll is None:
            return
        for pid in roll.due(self._running(), self.WORKERS):
            self._stop(pid)
        if roll.done:
            state.roll = None
            with _sigchld_held():
                self.log.info("Reload done: %d old workers stopped", roll.stopped)

    def _stop(self, pid: int) -> None:
        """Ask a worker to stop: SIGTERM now, and SIGKILL (from :meth:`_kill_overdue`) if it
        still runs after ``graceful_timeout``, as on shutdown."""
        self.kill_worker(pid, signal.SIGTERM)
        self._tornadofork.kill_due[pid] = time.monotonic() + self.cfg.graceful_timeout

    def _kill_overdue(self) -> None:
        """SIGKILL the workers asked to stop that still run after their ``graceful_timeout``."""
        kill_due = self._tornadofork.kill_due
        if not kill_due:
            return  # the common turn: nothing to allocate
        now = time.monotonic()
        for pid, due in list(kill_due.items()):
            if pid not in self.WORKERS:
                del kill_due[pid]
            elif now >= due:
                del kill_due[pid]
                self.kill_worker(pid, signal.SIGKILL)

    def _show_state(self) -> None:
        """Arm the backoff alarm; show the tasks' state (title, gauges, metrics)."""
        state = self._tornadofork
        table = state.table
        ready = table.next_ready()
        if ready is not None:
            # SIGALRM wakes the main loop when the earliest backoff ends.
            signal.setitimer(signal.ITIMER_REAL, max(ready - table.clock(), _POLL_SECONDS))
        with _sigchld_held():
            state.observe.show(self.proc_name)

    def _stop_pending(self) -> bool:
        """Whether a stop signal waits in the signal list of gunicorn 23's main loop.

        gunicorn 23 reaps workers inside its SIGCHLD handler and runs manage_workers() before
        it takes the next queued signal: when a stop reaches the whole process group (Ctrl-C,
        ``systemctl stop``) the workers' ends can be reaped first. They are part of the
        shutdown, not restarts. Later versions queue SIGCHLD behind the stop signal.
        """
        queue = getattr(self, "SIG_QUEUE", None)
        return isinstance(queue, list) and any(sig in _MASTER_STOP_SIGNALS for sig in queue)

    def _settle(self) -> None:
        state = self._tornadofork
        if self._stop_pending():
            return  # the main loop stops next; the ids stay held, so nothing respawns
        with _sigchld_held():
            while state.reaped:
                reaped = state.reaped.popleft()
                exit = classify(
                    reaped.status,
                    reaped.report,
                    requested=state.table.is_stopping(reaped.pid),
                    aborted=reaped.aborted,
                )
                outcome = state.table.exited(reaped.pid, exit)
                state.observe.reaped(reaped.pid, outcome)
                if outcome is not None:
                    self._log_outcome(outcome)
        self._halt_if_ended()

    def _halt_if_ended(self) -> None:
        """Stop the server once no task is left to run or wait: 0 when all finished, 6 when
        one failed. A reap can end the last task, and so can a scale-down that retires the
        last ones that were waiting out a backoff."""
        state = self._tornadofork
        status = state.table.exit_status()
        if status == 0:
            with _sigchld_held():
                self.log.info("All %d tasks finished", state.table.size)
            raise HaltServer(FINISHED_REASON, 0)
        if status is not None:
            failed = len(state.table.failed())
            self._show_state()  # the failed count, on the title for the whole shutdown
            with _sigchld_held():
                self.log.error(
                    "No task left to run: %d of %d tasks failed, %d finished",
                    failed,
                    state.table.size,
                    state.table.size - failed,
                )
            raise HaltServer(TASKS_FAILED_REASON, status)

    def _log_outcome(self, outcome: Outcome) -> None:
        """Log the judgment of a worker's end; raise HaltServer when the server stops."""
        ending, action = outcome.exit.ending, outcome.action
        how = outcome.exit.cause() if outcome.rule is not None else outcome.exit.describe()
        what = f"task {outcome.task_id} (pid {outcome.pid}) {how}"
        why = f" ({outcome.why})" if outcome.why else ""
        cap = self._tornadofork.options.max_restarts
        if ending is Ending.BOOT_FAILED:
            self.log.error("%s", what)
            raise HaltServer("Worker failed to boot.", self.WORKER_BOOT_ERROR)
        if ending is Ending.APP_FAILED:
            self.log.error("%s", what)
            raise HaltServer("App failed to load.", self.APP_LOAD_ERROR)
        self._tornadofork.observe.judged(outcome)
        if action is Action.FAIL_TASK:
            self.log.error("%s: failed%s, not replaced", what, why)
            if not outcome.give_up:
                return
        if outcome.give_up:
            self._show_state()  # the count that gave up, on the title for the whole shutdown
            if action is Action.GIVE_UP:
                self.log.error("%s: giving up%s", what, why)
                raise HaltServer(POLICY_GIVE_UP_REASON, GIVE_UP_STATUS)
            if action is Action.FAIL_TASK:
                self.log.error("%s (%s)", FAILED_TASKS_REASON, outcome.give_up_why)
                raise HaltServer(FAILED_TASKS_REASON, GIVE_UP_STATUS)
            self.log.error("%s; %s (%s)", what, GIVE_UP_REASON, outcome.give_up_why)
            raise HaltServer(GIVE_UP_REASON, GIVE_UP_STATUS)
        if action is Action.COUNT:
            wait = f" in {outcome.delay:g}s" if outcome.delay else ""
            counted = f": counted{why}" if outcome.rule is not None else ""
            self.log.warning(
                "%s%s, restarting%s (%d of max_restarts %d)", what, counted, wait, outcome.restarts, cap
            )
        elif action is Action.FINISH:
            finished = f": finished{why}" if outcome.rule is not None else ""
            self.log.info("%s%s", what, finished, extra=statsd("finished", 1, "counter"))
        elif ending is Ending.STOPPED:
            self.log.debug("%s", what)
        elif outcome.rule is not None:
            replaced = "restarting" if outcome.replaced else "not replaced"
            self.log.info("%s: ignored%s, %s", what, why, replaced)
        elif action is Action.IGNORE:
            self.log.info("%s%s", what, ", replacing it" if outcome.replaced else "")

    # -- signals, halting and what gunicorn shows -------------------------------------------

    def init_signals(self) -> None:
        """gunicorn's signal handlers, plus SIGALRM to end a backoff when one is set."""
        super().init_signals()
        if self._tornadofork.options.backoff:
            signal.signal(signal.SIGALRM, lambda signum, frame: self.wakeup())

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        """gunicorn's halt, with the backoff timer disarmed first: the master's interpreter
        puts SIGALRM's default action back as it exits, and a timer that fired then would
        end the master by SIGALRM instead of its exit status."""
        if self._tornadofork.options.backoff:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            super().halt(reason, exit_status)
        finally:
            self._tornadofork.observe.closing()

    def handle_usr1(self) -> None:
        """gunicorn's USR1 (reopen logs, signal workers), then one log line per task."""
        super().handle_usr1()
        with _sigchld_held():
            for line in self._tornadofork.observe.task_lines():
                self.log.info("%s", line)

    def _start_control_server(self) -> None:
        """gunicorn's control socket, whose ``show workers`` also lists the tasks. Its thread
        starts with the arbiter's signals blocked, so that the kernel gives each of them to
        the main thread, lowest number first: a SIGCHLD taken there while the TERM sent
        with it went to the other thread would have the workers' ends judged before the
        shutdown, as restarts."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _ARBITER_SIGNALS)
        try:
            super()._start_control_server()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        server = getattr(self, "_control_server", None)
        handlers = getattr(server, "handlers", None)
        show_workers = getattr(handlers, "show_workers", None)
        if handlers is not None and show_workers is not None:
            handlers.show_workers = lambda: self._tornadofork.observe.listing(show_workers(), self.WORKERS)

    # -- reload -----------------------------------------------------------------------

    def reload(self) -> None:
        """gunicorn's reload (configuration, logs, listeners, ``on_reload``, pidfile), with
        its "start a full new set, then stop the old one" replaced by a rolling replacement
        that the main loop moves on: a quarter of the tasks at a time, never two workers
        with one id, every signal handled meanwhile."""
        state = self._tornadofork
        state.reloading = True
        try:
            super().reload()
        except _RollStarted:
            pass
        finally:
            state.reloading = False

    def maybe_promote_master(self) -> None:
        """gunicorn's promotion of a USR2 master, which titles it anew: the task state is
        put back on the title."""
        waiting = self.master_pid != 0
        super().maybe_promote_master()
        if waiting and self.master_pid == 0:
            self._tornadofork.observe.promoted()
            self._show_state()

    def setup(self, app: Any) -> None:
        """gunicorn's setup; ``workers <= 0`` means one worker per usable CPU. A reload keeps
        the metrics directory the arbiter publishes in: its workers must write there too."""
        super().setup(app)
        if self.num_workers <= 0:
            self.num_workers = available_cpus()
        exporter = self._tornadofork.observe.prometheus
        if exporter is not None and exporter.keep_directory(self.cfg):
            from .prometheus import ENV_DIR

            self.log.error(
                "gunicorn_tornadofork: %s cannot change on reload (prometheus=True); keeping %r",
                ENV_DIR,
                exporter.path,
            )


@contextmanager
def _sigchld_held() -> Iterator[None]:
    """On gunicorn 23, hold SIGCHLD back while the main loop writes to the log.

    gunicorn 23 reaps, and logs each reaped worker, inside its SIGCHLD handler: a handler
    run in the middle of the main loop's write to the same log file re-enters that file's
    buffer, and logging then drops one of the two lines (printing "--- Logging error ---"
    and a stack to stderr instead). Held back, the signal runs its handler right after."""
    if not _REAPS_IN_SIGCHLD_HANDLER:
        yield
        return
    # The mask saved is this call's own: a SIGCHLD handler that runs while it is being set
    # (and holds SIGCHLD in turn) cannot overwrite it.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def install(server: Any, options: Options, prometheus: Exporter | None = None) -> None:
    """Lay :class:`TornadoForkArbiter` over ``server``'s class and start its task table."""
    if server.num_workers <= 0:
        server.num_workers = available_cpus()
    cls = type(server)
    server.__class__ = type(f"TornadoFork{cls.__name__}", (TornadoForkArbiter, cls), {})
    table = TaskTable(
        server.num_workers,
        options.max_restarts,
        offset=options.task_id_offset,
        restart_window=options.restart_window,
        max_task_restarts=options.max_task_restarts,
        backoff=options.backoff,
        backoff_max=options.backoff_max,
        policy=options.exit_policy,
        task_cap_action=options.task_cap_action,
        max_failed_tasks=options.max_failed_tasks,
    )
    server._tornadofork = _State(options, table, Observer(server.log, options, table, prometheus))
    worker_side.enable(os.getpid())
