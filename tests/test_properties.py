"""Long random histories of a server's workers, checked step by step against the contract.

A model of the arbiter drives the pure core (``TaskTable`` and ``classify``) through spawns,
crashes, kills, recycles, timeouts, finishes, stop requests, scaling and reloads, and after
every step checks the invariants: ids stay in range (or are being retired), no id has two
holders, a finished task is never pending, the restart count is the number of counted ends,
and the server gives up exactly when that count first exceeds ``max_restarts``. Each history
runs under a random exit policy (rules, ``max_task_restarts`` with either ``task_cap_action``,
``max_failed_tasks``): every end gets the first matching rule's action, failed tasks are never
pending, and the server stops with the right status.

Each event of a history is one drawn integer that the model decodes (what happens, to which
worker, with which status and report): one draw per step keeps thousands of histories within
a few seconds. A failing history is shown decoded.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gunicorn_tornadofork.exits import (
    APP_LOAD_ERROR,
    REPORT_FINISHED,
    REPORT_RECYCLED,
    WORKER_BOOT_ERROR,
    Ending,
    Exit,
    classify,
    signal_name,
    signal_report,
)
from gunicorn_tornadofork.options import Options
from gunicorn_tornadofork.policy import TASKS_FAILED_STATUS
from gunicorn_tornadofork.tasks import TaskTable

REPORT_SIZE = 8

# -- strategies -------------------------------------------------------------------------

# Every wait status a reaped child can have: an exit code, or a signal (with or without a
# core dump).
SIGNALS = sorted(int(s) for s in signal.valid_signals() if 0 < s < 0x7F)
STATUSES = [code << 8 for code in range(256)] + [s | core for s in SIGNALS for core in (0, 0x80)]
# The ends a worker can have on its own that count: a crash status or a signal.
CRASHES = [s for s in STATUSES if os.waitstatus_to_exitcode(s) not in (0, WORKER_BOOT_ERROR, APP_LOAD_ERROR)]
BARE_REPORTS = [
    b"",
    REPORT_FINISHED,
    REPORT_RECYCLED,
    *(signal_report(s) for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGABRT, signal.SIGTERM, 64)),
    b"S",
    b"Sx",
    b"FR",
    b"F junk",
    b"\xff" * REPORT_SIZE,
]


def padded(report: bytes) -> bytes:
    """A report as a worker writes it: NUL-padded to its slot."""
    return report.ljust(REPORT_SIZE, b"\0")


REPORTS = BARE_REPORTS + [padded(r) for r in BARE_REPORTS if len(r) < REPORT_SIZE]
STOP_STATUSES = [0, 1 << 8, signal.SIGTERM, signal.SIGKILL]
ABORT_STATUSES = [0, 1 << 8, signal.SIGKILL, signal.SIGABRT | 0x80]
MAX_TASKS = 8
# What random rules match: statuses a worker may exit with and signals that may kill it.
MATCH_ITEMS: list[int] = [
    *(0, 1, 2, 11, 15, 42, 75, 78, 255),
    signal.SIGKILL,
    signal.SIGSEGV,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGABRT,
]
POLICY_ACTIONS = ["count", "ignore", "finish", "fail_task", "give_up"]
# The exit table's own action for each kind of end.
TABLE_ACTIONS = {
    Ending.STOPPED: "ignore",
    Ending.RECYCLED: "ignore",
    Ending.FINISHED: "finish",
    Ending.KILLED: "count",
    Ending.FAILED: "count",
    Ending.TIMED_OUT: "count",
    Ending.BOOT_FAILED: "halt",
    Ending.APP_FAILED: "halt",
}


@dataclass(frozen=True)
class Policy:
    """A random exit policy, as the options of install() give it."""

    # Lists, not sets: a set would fold status 11 and SIGSEGV (equal ints) into one.
    rules: tuple[tuple[tuple[int, ...], str], ...] = ()
    max_task_restarts: int | None = None
    task_cap_action: str = "give_up"
    max_failed_tasks: int | None = None

    def options(self) -> dict[str, Any]:
        return {
            "exit_policy": [(list(match), action) for match, action in self.rules],
            "max_task_restarts": self.max_task_restarts,
            "task_cap_action": self.task_cap_action,
            "max_failed_tasks": self.max_failed_tasks,
        }

    def action(self, exit: Exit) -> tuple[str, int | None]:
        """The model's reading of the contract: the first rule matching the signal (else the
        status) of a worker's own end decides; anything else follows the exit table."""
        if exit.ending in (Ending.FINISHED, Ending.FAILED, Ending.KILLED) and not exit.reported:
            for number, (match, action) in enumerate(self.rules, 1):
                if exit.signal is not None:
                    hit = any(isinstance(m, signal.Signals) and m == exit.signal for m in match)
                else:
                    hit = any(not isinstance(m, signal.Signals) and m == exit.status for m in match)
                if hit:
                    return action, number
        return TABLE_ACTIONS[exit.ending], None


NO_POLICY = Policy()
policies = st.builds(
    Policy,
    rules=st.lists(
        st.tuples(
            st.lists(
                st.sampled_from(MATCH_ITEMS),
                min_size=1,
                max_size=3,
                unique_by=lambda m: (type(m) is signal.Signals, int(m)),
            ).map(tuple),
            st.sampled_from(POLICY_ACTIONS),
        ),
        max_size=4,
    ).map(tuple),
    max_task_restarts=st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
    task_cap_action=st.sampled_from(["give_up", "fail_task"]),
    max_failed_tasks=st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
)

# -- classify on its own --------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(
    status=st.sampled_from(STATUSES),
    report=st.one_of(st.sampled_from(REPORTS), st.binary(max_size=REPORT_SIZE)),
    requested=st.booleans(),
    aborted=st.booleans(),
)
def test_classify_follows_the_exit_table(status: int, report: bytes, requested: bool, aborted: bool) -> None:
    """For any wait status, report and arbiter knowledge, classify() picks the row of the
    exit table that the contract gives, in its order of precedence."""
    code = os.waitstatus_to_exitcode(status)
    result = classify(status, report, requested=requested, aborted=aborted)
    text = result.describe()
    assert text
    assert "\n" not in text
    bare = report.rstrip(b"\0")
    finished_report = bare == REPORT_FINISHED
    signal_reported = int(bare[1:]) if bare[:1] == b"S" and bare[1:].isdigit() else None
    if code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR):
        assert result.ending.halts
        assert result.status == code
        return
    assert not result.ending.halts
    # USR1 reaches a worker past its loop, which may die of it: its own report still stands
    upkeep = code == -signal.SIGUSR1
    if finished_report and (aborted or upkeep or code in (0, -signal.SIGTERM, -signal.SIGINT)):
        assert result == Exit(Ending.FINISHED, status=0)
    elif requested:
        assert result.ending is Ending.STOPPED
    elif (aborted or upkeep) and bare == REPORT_RECYCLED:
        assert result == Exit(Ending.RECYCLED, status=0)
    elif aborted:
        assert result.ending is Ending.TIMED_OUT
    elif code < 0:
        assert result == Exit(Ending.KILLED, signal=-code)
        assert signal_name(-code) in text
    elif signal_reported is not None:
        assert result == Exit(Ending.KILLED, signal=signal_reported, status=code)
    elif code > 0:
        assert result == Exit(Ending.FAILED, status=code)
        assert str(code) in text
    elif bare == REPORT_RECYCLED:
        assert result == Exit(Ending.RECYCLED, status=0)
    else:
        assert result == Exit(Ending.FINISHED, status=0)
    # only the finished report makes an end the worker's own word, outside the exit policy
    assert result.reported == (result.ending is Ending.FINISHED and finished_report)
    # a stop or a timeout keeps the signal or status that ended the worker
    if result.ending in (Ending.STOPPED, Ending.TIMED_OUT):
        assert (result.signal, result.status) == ((-code, None) if code < 0 else (None, code))
    # a worker that the arbiter did not ask to stop, and that neither exited 0 nor finished,
    # always counts; so does an abort, unless the worker had finished or recycled before it
    own_end = finished_report or bare == REPORT_RECYCLED
    if aborted and not requested and not own_end:
        assert result.ending.counted
    own_word = finished_report and code in (-signal.SIGTERM, -signal.SIGINT)
    if not aborted and not requested and code != 0 and not own_word and not (upkeep and own_end):
        assert result.ending.counted


# -- histories of a server ------------------------------------------------------------------

T = TypeVar("T")


class Digits:
    """Decodes one drawn integer into the choices of an event, digit by digit."""

    def __init__(self, value: int) -> None:
        self.value = value

    def below(self, n: int) -> int:
        self.value, digit = divmod(self.value, n)
        return digit

    def choice(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]


class Arbiter:
    """An arbiter's view of its workers, kept in plain dicts and sets next to the table.

    When a server gives up, halts or finishes every task, the history goes on with a new
    server of the size and cap the history started with.
    """

    def __init__(self, size: int, cap: int, policy: Policy = NO_POLICY) -> None:
        self.first_size = size
        self.next_pid = 1000
        self.servers = 0
        self.policy = policy
        self.start_server(size, cap)

    def start_server(self, size: int, cap: int) -> None:
        self.servers += 1
        options = Options.parse({"max_restarts": cap, **self.policy.options()})
        self.table = TaskTable(
            size,
            cap,
            max_task_restarts=options.max_task_restarts,
            policy=options.exit_policy,
            task_cap_action=options.task_cap_action,
            max_failed_tasks=options.max_failed_tasks,
        )
        self.size = size
        self.cap = cap
        self.holder: dict[int, int] = {}  # pid -> task id
        self.stopping: set[int] = set()
        self.aborted: set[int] = set()
        self.done: set[int] = set()  # finished ids still in range
        self.failed: set[int] = set()  # failed ids still in range
        self.restarts = 0
        self.task_restarts: dict[int, int] = {}  # counted ends of each id while in range

    # -- helpers ------------------------------------------------------------------------

    def new_pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def free_pids(self) -> list[int]:
        """Live workers the arbiter neither asked to stop nor aborted."""
        return [p for p in self.holder if p not in self.stopping and p not in self.aborted]

    def model_pending(self) -> list[int]:
        held = set(self.holder.values())
        return [t for t in range(self.size) if t not in held and t not in self.done and t not in self.failed]

    def spawn(self) -> None:
        task = self.table.next_pending()
        assert task is not None
        assert task == self.model_pending()[0], "ids are handed out lowest first"
        pid = self.new_pid()
        self.table.spawned(task, pid)
        self.holder[pid] = task

    def spawn_all(self) -> None:
        while self.table.next_pending() is not None:
            self.spawn()
        assert not self.model_pending()

    def end(self, pid: int, status: int, report: bytes) -> tuple[Exit, bool]:
        """Reap ``pid``: classify its end from what the arbiter knows, record it and check
        the outcome; returns the end and whether the server is over."""
        exit = classify(status, report, requested=pid in self.stopping, aborted=pid in self.aborted)
        task = self.holder.pop(pid)
        self.stopping.discard(pid)
        self.aborted.discard(pid)
        outcome = self.table.exited(pid, exit)
        assert outcome is not None
        assert (outcome.task_id, outcome.pid, outcome.exit) == (task, pid, exit)
        in_range = task < self.size
        action, rule = self.policy.action(exit)
        assert outcome.rule == rule
        counted = action == "count"
        if counted:
            self.restarts += 1
            if in_range:
                self.task_restarts[task] = self.task_restarts.get(task, 0) + 1
        task_cap = self.policy.max_task_restarts
        over_task_cap = counted and in_range and task_cap is not None and self.task_restarts[task] > task_cap
        give_up = action == "give_up" or (counted and self.restarts > self.cap)
        if over_task_cap and not give_up:
            if self.policy.task_cap_action == "fail_task":
                action = "fail_task"
            else:
                give_up = True
        if in_range and action == "finish":
            self.done.add(task)
        if in_range and action == "fail_task":
            self.failed.add(task)
            failed_cap = self.policy.max_failed_tasks
            give_up = give_up or (failed_cap is not None and len(self.failed) > failed_cap)
        assert outcome.action.value == action
        assert outcome.counted == counted
        assert outcome.failed_tasks == len(self.failed)
        assert outcome.restarts == self.restarts == self.table.restarts
        assert outcome.give_up == give_up
        if give_up and counted and action == "count" and not over_task_cap:
            assert self.restarts == self.cap + 1, "gives up when the count first exceeds the cap"
        assert bool(outcome.give_up_why) == give_up
        expect_replaced = (
            not give_up
            and action in ("count", "ignore")
            and in_range
            and task not in self.done
            and task not in self.failed
        )
        assert outcome.replaced == expect_replaced
        if not give_up and action != "halt":
            assert (task in self.table.pending()) == expect_replaced
        over = give_up or action == "halt" or self.table.ended()
        if self.table.ended():
            assert self.table.exit_status() == (TASKS_FAILED_STATUS if self.failed else 0)
        self.check(over)
        if over:
            self.start_server(self.first_size, self.cap)
        return exit, over

    def stop(self, pid: int) -> None:
        """The arbiter sends ``pid`` a stop signal (TERM, QUIT or INT)."""
        self.table.stop_requested(pid)
        self.stopping.add(pid)

    # -- events: each returns a description of what happened, for a failing history -----

    def spawn_one(self, d: Digits) -> str:
        """The arbiter starts a worker for the lowest pending id, if any."""
        if self.table.next_pending() is None:
            return "spawn_one: nothing pending"
        self.spawn()
        return f"spawn_one: task {self.holder[self.next_pid]} pid {self.next_pid}"

    def spawn_workers(self, d: Digits) -> str:
        """The arbiter starts a worker for every pending id."""
        self.spawn_all()
        return f"spawn_workers: live {self.table.live()}"

    def second_holder(self, d: Digits) -> str:
        """Spawning a worker for an id that is held fails and changes nothing."""
        if not self.holder:
            return "second_holder: no worker"
        task = d.choice(sorted(self.holder.values()))
        before = self.table.live()
        pid = self.new_pid()
        try:
            self.table.spawned(task, pid)
        except ValueError:
            pass
        else:
            raise AssertionError(f"task {task} got a second holder")
        assert self.table.live() == before
        assert self.table.task_of(pid) is None
        return f"second_holder: task {task} refused"

    def any_end(self, d: Digits) -> str:
        """Any worker ends in any way."""
        if not self.holder:
            return "any_end: no worker"
        pid, status, report = d.choice(sorted(self.holder)), d.choice(STATUSES), d.choice(REPORTS)
        exit, _ = self.end(pid, status, report)
        return f"any_end: pid {pid} status {status:#x} report {report!r} -> {exit.ending.name}"

    def crash(self, d: Digits) -> str:
        """A worker crashes or is killed: counted, replaced unless the server gives up."""
        pids = self.free_pids()
        if not pids:
            return "crash: no free worker"
        pid, status = d.choice(sorted(pids)), d.choice(CRASHES)
        exit, _ = self.end(pid, status, b"")
        assert exit.ending.counted
        return f"crash: pid {pid} status {status:#x} -> {exit.ending.name}"

    def ruled_end(self, d: Digits) -> str:
        """A worker exits with a status, or is killed by a signal, that a rule names."""
        pids = self.free_pids()
        if not pids or not self.policy.rules:
            return "ruled_end: no free worker or no rule"
        pid = d.choice(sorted(pids))
        match, _ = d.choice(self.policy.rules)
        item = d.choice(match)
        status = int(item) if isinstance(item, signal.Signals) else item << 8
        exit, _ = self.end(pid, status, b"")
        return f"ruled_end: pid {pid} {item!r} -> {exit.ending.name}"

    def stranger_signal(self, d: Digits) -> str:
        """A worker stopped by a signal the arbiter did not send: counted."""
        pids = self.free_pids()
        if not pids:
            return "stranger_signal: no free worker"
        pid, signum = d.choice(sorted(pids)), d.choice([signal.SIGTERM, signal.SIGQUIT, signal.SIGINT])
        exit, _ = self.end(pid, 0, signal_report(signum))
        assert exit == Exit(Ending.KILLED, signal=signum, status=0)
        return f"stranger_signal: pid {pid} {signum!r}"

    def recycle(self, d: Digits) -> str:
        """max_requests or a code reload: replaced, not counted."""
        pids = self.free_pids()
        if not pids:
            return "recycle: no free worker"
        pid, report = d.choice(sorted(pids)), d.choice([REPORT_RECYCLED, padded(REPORT_RECYCLED)])
        exit, _ = self.end(pid, 0, report)
        assert exit.ending is Ending.RECYCLED
        return f"recycle: pid {pid}"

    def finish(self, d: Digits) -> str:
        """A worker finishes its task (possibly while being stopped or retired; an aborted
        worker's end is a timeout whatever it reports)."""
        pids = [p for p in self.holder if p not in self.aborted]
        if not pids:
            return "finish: no worker"
        pid, status = d.choice(sorted(pids)), d.choice([0, signal.SIGTERM])
        task = self.holder[pid]
        exit, over = self.end(pid, status, padded(REPORT_FINISHED))
        assert exit.ending is Ending.FINISHED
        assert over or task not in self.table.pending()
        return f"finish: pid {pid} task {task} status {status:#x}"

    def request_stop(self, d: Digits) -> str:
        """The arbiter sends a stop signal to a worker."""
        if not self.holder:
            return "request_stop: no worker"
        pid = d.choice(sorted(self.holder))
        self.stop(pid)
        return f"request_stop: pid {pid}"

    def stopped(self, d: Digits) -> str:
        """A worker the arbiter asked to stop exits: not counted, even if it was also aborted
        for its timeout (a slow worker_exit)."""
        if not self.stopping:
            return "stopped: no stopping worker"
        pid, status = d.choice(sorted(self.stopping)), d.choice(STOP_STATUSES)
        exit, _ = self.end(pid, status, b"")
        assert exit.ending is Ending.STOPPED
        assert not exit.ending.counted
        return f"stopped: pid {pid} status {status:#x} -> {exit.ending.name}"

    def time_out(self, d: Digits) -> str:
        """The arbiter aborts a worker that missed its heartbeat (its SIGKILL later is no
        stop request)."""
        pids = self.free_pids()
        if not pids:
            return "time_out: no free worker"
        pid = d.choice(sorted(pids))
        self.aborted.add(pid)
        return f"time_out: pid {pid}"

    def timed_out(self, d: Digits) -> str:
        """An aborted worker still in its loop ends, whatever its status: counted as a
        timeout, unless the arbiter had also asked it to stop."""
        if not self.aborted:
            return "timed_out: no aborted worker"
        pid = d.choice(sorted(self.aborted))
        status, report = d.choice(ABORT_STATUSES), d.choice([b"", signal_report(signal.SIGABRT)])
        expected = Ending.STOPPED if pid in self.stopping else Ending.TIMED_OUT
        exit, _ = self.end(pid, status, report)
        assert exit.ending is expected
        return f"timed_out: pid {pid} status {status:#x} -> {exit.ending.name}"

    def slow_exit(self, d: Digits) -> str:
        """A worker that had finished its task or recycled is aborted during its exit (a
        worker_exit that outlasts ``timeout``): its own end stands, not counted."""
        pids = [p for p in self.holder if p not in self.stopping]
        if not pids:
            return "slow_exit: no worker"
        pid, status = d.choice(sorted(pids)), d.choice(ABORT_STATUSES)
        report = d.choice([REPORT_FINISHED, REPORT_RECYCLED])
        self.aborted.add(pid)
        exit, _ = self.end(pid, status, padded(report))
        assert exit.ending is (Ending.FINISHED if report == REPORT_FINISHED else Ending.RECYCLED)
        assert not exit.ending.counted
        return f"slow_exit: pid {pid} status {status:#x} report {report!r}"

    def scale(self, d: Digits) -> str:
        """TTIN/TTOU: the table says which workers to retire; the arbiter stops them."""
        size = d.below(MAX_TASKS)
        expected = sorted(p for p, t in self.holder.items() if t >= size and p not in self.stopping)
        retire = self.table.resize(size)
        assert retire == expected
        self.size = size
        self.done = {t for t in self.done if t < size}
        self.failed = {t for t in self.failed if t < size}
        # a retired id is a new task when it comes back: its restarts are forgotten
        self.task_restarts = {t: n for t, n in self.task_restarts.items() if t < size}
        for pid in retire:
            self.stop(pid)
        assert not any(t >= size for t in self.table.running())
        self.check(over=False)
        return f"scale: size {size}, retiring {retire}"

    def reload(self, d: Digits) -> str:
        """HUP: every running worker is stopped and replaced by one with the same id, a
        quarter at a time, each old worker reaped before its successor is spawned."""
        running = self.table.running()
        old = {t: self.holder_of(t) for t in running}
        step = max(1, -(-len(running) // 4))
        for start in range(0, len(running), step):
            batch = [old[t] for t in running[start : start + step]]
            for pid in batch:
                self.stop(pid)
            for pid in batch:
                status = d.choice(STOP_STATUSES)
                report = d.choice([b"", REPORT_RECYCLED, signal_report(signal.SIGTERM)])
                _, over = self.end(pid, status, report)
                if over:
                    return f"reload: server over at pid {pid}"
            self.spawn_all()
        self.spawn_all()
        for task in running:
            assert self.table.pid_of(task) not in (None, old[task]), f"task {task} was not replaced"
        return f"reload: replaced {old} with {self.table.live()}"

    def unknown_child(self, d: Digits) -> str:
        """A child the table never saw is reaped: nothing changes."""
        pid = self.new_pid()
        before = (self.table.live(), self.table.restarts)
        assert self.table.exited(pid, classify(d.choice(STATUSES), d.choice(REPORTS))) is None
        assert (self.table.live(), self.table.restarts) == before
        return f"unknown_child: pid {pid}"

    def holder_of(self, task: int) -> int:
        pid = self.table.pid_of(task)
        assert pid is not None
        return pid

    # -- the invariants -------------------------------------------------------------------

    def check(self, over: bool = False) -> None:
        """The table agrees with the model and the contract's invariants hold."""
        table = self.table
        live = table.live()
        # no id has two holders, and the table knows who holds what
        tasks = list(self.holder.values())
        assert len(tasks) == len(set(tasks)), "a task id has two holders"
        assert live == {t: p for p, t in self.holder.items()}
        for pid, task in self.holder.items():
            assert table.task_of(pid) == task
            assert table.is_stopping(pid) == (pid in self.stopping)
        # ids are in range, or their worker is being retired
        for task, pid in live.items():
            assert task < self.size or table.is_stopping(pid), f"task {task} out of range"
        # pending: in range, not held, not finished, lowest first
        pending = list(table.pending())
        assert pending == self.model_pending()
        assert table.next_pending() == (pending[0] if pending else None)
        assert table.running() == sorted(
            t for p, t in self.holder.items() if t < self.size and p not in self.stopping
        )
        # a finished or failed task is never pending nor held; a retired id is forgotten
        done = {t for t in table.done() if t < self.size}
        assert done == self.done
        assert not done & set(pending)
        assert table.failed() == self.failed
        assert not self.failed & (set(pending) | set(live))
        assert [s.failed for s in table.states()] == [t in self.failed for t in range(self.size)]
        failed_cap = self.policy.max_failed_tasks
        assert over or failed_cap is None or len(self.failed) <= failed_cap
        # the restart count is the number of counted ends, and has not passed the cap
        assert table.restarts == self.restarts
        assert over or self.restarts <= self.cap
        # each task's own restarts: its counted ends since its id last entered the range
        own = [self.task_restarts.get(t, 0) for t in range(self.size)]
        assert [s.restarts for s in table.states()] == own
        # every task finished and no worker left (the server would exit 0 right away)
        expected = self.size > 0 and not self.holder and self.done == set(range(self.size))
        assert table.all_done() == expected
        # no task left running or waiting (the server would exit 0, or 6 if one failed)
        ended = self.size > 0 and not self.holder and self.done | self.failed == set(range(self.size))
        assert table.ended() == ended
        assert table.exit_status() == (None if not ended else TASKS_FAILED_STATUS if self.failed else 0)


EVENTS: list[Callable[[Arbiter, Digits], str]] = [
    Arbiter.spawn_one,
    Arbiter.spawn_workers,
    Arbiter.second_holder,
    Arbiter.any_end,
    Arbiter.crash,
    Arbiter.ruled_end,
    Arbiter.stranger_signal,
    Arbiter.recycle,
    Arbiter.finish,
    Arbiter.request_stop,
    Arbiter.stopped,
    Arbiter.time_out,
    Arbiter.timed_out,
    Arbiter.slow_exit,
    Arbiter.scale,
    Arbiter.reload,
    Arbiter.unknown_child,
]


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    size=st.integers(min_value=0, max_value=MAX_TASKS - 1),
    cap=st.one_of(st.integers(min_value=0, max_value=4), st.integers(min_value=5, max_value=40)),
    events=st.lists(st.integers(min_value=0, max_value=2**24 - 1), min_size=20, max_size=100),
    policy=st.one_of(st.just(NO_POLICY), policies),
)
def test_histories_keep_the_invariants(size: int, cap: int, events: list[int], policy: Policy) -> None:
    """Through any history of spawns, ends of every kind, stop requests, timeouts, scaling
    and reloads, under any exit policy, the table agrees with the model after every step: ids
    in range or retiring, one holder per id, finished and failed tasks never pending, every
    end judged by the first matching rule, the restart count equal to the counted ends,
    give-up exactly when a cap is first exceeded or a give_up rule matches (then a new
    server), and status 6 exactly when no task is left and one failed."""
    arbiter = Arbiter(size, cap, policy)
    history: list[str] = [f"server: size {size}, max_restarts {cap}, {policy}"]
    try:
        for value in events:
            # 0, where shrinking takes unneeded events, does nothing
            if value:
                event = EVENTS[(value - 1) % len(EVENTS)]
                history.append(f"{event.__name__}: failed here")
                servers = arbiter.servers
                history[-1] = event(arbiter, Digits((value - 1) // len(EVENTS)))
                if arbiter.servers != servers:
                    history.append("server over (gave up, halted or all done): a new one starts")
                arbiter.check()
    except AssertionError:
        note("\n".join(history))
        raise
