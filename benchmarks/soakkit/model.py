"""An independent model of the contract (SPEC.md, the README's exit table and Guarantees).

Written for the soak from the documents alone: it must not import or mirror
``gunicorn_tornadofork``'s ``TaskTable`` or ``classify()``, since it exists to catch their
bugs. It is event-driven and pure (times are passed in): the runner tells it what it did
(signals sent, requests made), what it saw (workers started, log lines, /proc samples), and
the model records every contract violation in :attr:`Model.violations`.

Where the contract allows several outcomes (a signal racing a recycle, a kill during a
reload), the injector registers all of them and the model adopts the one the server logged.

Outcomes are short strings: ``killed:SIGKILL`` (killed by a signal, or stopped by one the
arbiter did not send), ``exited:42``, ``timeout``, ``stopped`` (the arbiter asked it to
stop), ``recycled`` and ``finished``. The first three are counted restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Seconds by which the soak's observation of a log line may trail the arbiter's clock.
SLACK = 0.75
#: Seconds a worker's end line may wait for the record of that worker's start.
UNKNOWN_PID_GRACE = 3.0
#: Seconds after its master's end by which no process of the server may be left.
ORPHAN_SECONDS = 2.0

STOPPED, RECYCLED, FINISHED, TIMEOUT = "stopped", "recycled", "finished", "timeout"


def counted(outcome: str) -> bool:
    """Whether an outcome counts toward ``max_restarts`` (the exit table)."""
    return outcome == TIMEOUT or outcome.startswith(("killed:", "exited:"))


USR1_DEATH = "killed:SIGUSR1"


def killed(*signals: str) -> frozenset[str]:
    return frozenset(f"killed:{name}" for name in signals)


@dataclass(frozen=True)
class Contract:
    """What the model needs to know about one server run."""

    workers: int
    offset: int = 0
    max_restarts: int = 100
    restart_window: float | None = None
    max_task_restarts: int | None = None
    backoff: float = 0.0
    backoff_max: float = 30.0
    recycles: bool = False  # max_requests > 0: any worker may recycle at any time
    graceful_timeout: float = 3.0
    timeout: float = 4.0
    respawn_seconds: float = 6.0  # how long a new worker may take to show up (scaling, reload)
    replace_seconds: float = 2.0  # how long a replacement may take after its backoff


@dataclass
class Expectation:
    outcomes: frozenset[str]
    deadline: float | None  # None: the worker may also live on (the class may ignore it)
    why: str


@dataclass
class Worker:
    pid: int
    task: int
    spawned_at: float
    expectations: list[Expectation] = field(default_factory=list)
    stop_ok: bool = False  # the arbiter had a reason to stop it (reload, scale-down, shutdown)
    ended_at: float | None = None
    outcome: str | None = None
    gone_at: float | None = None  # when /proc first showed it gone, its end not yet logged


@dataclass
class Task:
    finished: bool = False
    restarts: list[float] = field(default_factory=list)  # times of its counted restarts
    streak: int = 0  # consecutive counted failures (backoff)
    due: float | None = None  # a replacement must have started by then
    due_why: str = ""


@dataclass(frozen=True)
class EndLine:
    """One ``task T (pid P) ...`` line of the arbiter's log, parsed."""

    task: int
    pid: int
    outcome: str
    count: int | None = None  # k of "restarting (k of max_restarts M)"
    delay: float = 0.0  # "restarting in Xs"
    gave_up: bool = False
    give_up_count: int | None = None  # "(n restarts > max_restarts M)"
    give_up_task_count: int | None = None  # "(task T: n restarts > max_task_restarts M)"


class Model:
    """The contract, as a state machine fed with what the soak did and saw."""

    def __init__(self, contract: Contract, start: float = 0.0) -> None:
        self.c = contract
        self.size = contract.workers
        self.tasks: dict[int, Task] = {t: Task() for t in self.ids()}
        self.workers: dict[int, Worker] = {}
        self.counted_at: list[float] = []
        self.violations: list[str] = []
        self.notes: list[str] = []
        self.expected_status: frozenset[int] | None = None  # None: the master must keep running
        self.stopping_at: float | None = None  # when the soak asked the master to stop
        self.ending = ""  # why the master is expected to exit: "", gave up, finished, stop
        self.reload_until = start - 1.0
        self.wide_range: list[tuple[float, int]] = []  # (until, size): a recent larger size
        self.requests: dict[int, int] = {}  # request id -> pid that began serving it
        self.request_expectations: dict[int, Expectation] = {}
        self.unknown_ends: list[tuple[float, EndLine]] = []
        self.all_finished_logged = False
        self.recent_sizes: list[tuple[float, int]] = []  # (until, size): sizes just left
        self.ignores_term: set[int] = set()  # workers whose app ignores SIGTERM
        self.usr1_at: list[float] = []  # when the soak sent the master USR1

    # -- queries ------------------------------------------------------------------------

    def ids(self) -> range:
        return range(self.c.offset, self.c.offset + self.size)

    def live(self) -> dict[int, Worker]:
        """pid -> worker, for every worker started and not yet logged as ended."""
        return {pid: w for pid, w in self.workers.items() if w.ended_at is None}

    def running(self) -> dict[int, int]:
        """task -> pid of a live worker in range with nothing expected of it: a target."""
        found: dict[int, int] = {}
        for pid, w in self.live().items():
            if w.task in self.ids() and not w.expectations and not w.stop_ok:
                found[w.task] = pid
        return found

    def expected_ids(self) -> set[int]:
        """The ids that must have a live worker once the server has settled."""
        return {t for t in self.ids() if not self.tasks[t].finished}

    def sizes(self, now: float) -> set[int]:
        """The task counts the arbiter may hold now: signals sent together may be taken in
        any order (the kernel delivers pending signals lowest number first)."""
        return {self.size} | {size for until, size in self.recent_sizes if until >= now}

    def all_finished(self) -> bool:
        return self.size > 0 and all(self.tasks[t].finished for t in self.ids())

    def restarts_range(self, now: float) -> tuple[int, int]:
        """The counted restarts that count toward ``max_restarts`` now, as a range (with a
        ``restart_window``, a restart near its edge may or may not count yet)."""
        return self._window(self.counted_at, now)

    def title_ok(self, live: int, size: int, restarts: int, cap: int, now: float) -> bool:
        lo, hi = self.restarts_range(now)
        expected_live = len(self.expected_ids())
        return (
            live == expected_live
            and size == self.size
            and lo <= restarts <= hi
            and cap == self.c.max_restarts
        )

    def settled(self, live_ids: Iterable[int]) -> bool:
        return sorted(live_ids) == sorted(self.expected_ids())

    def busy(self, now: float) -> bool:
        """Whether a promised end or a replacement is still outstanding."""
        if any(t.due is not None for t in self.tasks.values()):
            return True
        return any(e.deadline is not None for w in self.live().values() for e in w.expectations)

    # -- what the soak did --------------------------------------------------------------

    def expect(self, pid: int, outcomes: Iterable[str], deadline: float | None, why: str) -> bool:
        """The soak did something to worker ``pid``: it must end in one of ``outcomes`` by
        ``deadline`` (or, with None, may also live on). False if the worker has ended."""
        w = self.workers.get(pid)
        if w is None or w.ended_at is not None:
            return False
        w.expectations.append(Expectation(frozenset(outcomes), deadline, why))
        return True

    def unexpect(self, pid: int) -> None:
        """Take back the last expectation on ``pid``: what the soak meant to do to it did not
        happen."""
        w = self.workers.get(pid)
        if w is not None and w.expectations:
            w.expectations.pop()

    def expect_request(self, request: int, outcomes: Iterable[str], deadline: float | None, why: str) -> None:
        """As :meth:`expect`, for whichever worker begins serving ``request``."""
        expectation = Expectation(frozenset(outcomes), deadline, why)
        pid = self.requests.get(request)
        if pid is None:
            self.request_expectations[request] = expectation
        elif (w := self.workers.get(pid)) is not None and w.ended_at is None:
            w.expectations.append(expectation)

    def scale(self, size: int, now: float, why: str) -> None:
        """The number of tasks becomes ``size`` (TTIN, TTOU, a reload with a new ``workers``):
        ids leave or join at the top; a retired worker is stopped, uncounted; an id that comes
        back is a new task."""
        size = max(size, 1)
        self.recent_sizes.append((now + self.c.respawn_seconds, self.size))
        if size < self.size:
            self.wide_range.append((now + self.c.respawn_seconds, self.size))
        for task in range(self.c.offset + size, self.c.offset + self.size):
            for w in self.live().values():
                if w.task == task:
                    w.stop_ok = True
                    w.expectations.append(
                        Expectation(
                            frozenset({STOPPED}), now + self._stop_bound(), f"{why}: task {task} retired"
                        )
                    )
        for task in range(self.c.offset + self.size, self.c.offset + size):
            self.tasks[task] = Task(due=now + self.c.respawn_seconds, due_why=f"{why}: new task {task}")
        for task in range(self.c.offset + size, self.c.offset + self.size):
            self.tasks.pop(task, None)
        self.size = size
        if self.all_finished() and self.expected_status is None:
            # The unfinished tasks were retired: the server exits 0 once their workers are gone.
            self.ending = "every task finished"
            self.expected_status = frozenset({0})
            self.stopping_at = now

    def reload(self, size: int, now: float) -> None:
        """HUP: every running task's worker is replaced, uncounted; ``size`` from the config."""
        bound = 4 * self._stop_bound() + 2 * self.c.respawn_seconds
        self.reload_until = now + bound
        for w in self.live().values():
            w.stop_ok = True
            if w.task in self.ids() and not w.expectations:
                w.expectations.append(Expectation(frozenset({STOPPED}), now + bound, "reload"))
        if size != self.size:
            self.scale(size, now, "reload")

    def usr1_sent(self, now: float) -> None:
        """The soak sent the master USR1, which it passes on to every worker."""
        self.usr1_at.append(now)

    def shutdown(self, now: float, status: int = 0) -> None:
        """The soak asked the master to stop (TERM, INT to the group): exit ``status``."""
        self.stopping_at = now
        self.ending = self.ending or "shutdown"
        if self.expected_status is None:
            self.expected_status = frozenset({status})
        for w in self.live().values():
            w.stop_ok = True
            w.expectations = [e for e in w.expectations if e.deadline is None]

    def master_killed(self, now: float, status: int) -> None:
        self.stopping_at = now
        self.ending = "master killed"
        self.expected_status = frozenset({status})

    # -- what the soak saw --------------------------------------------------------------

    def spawned(self, pid: int, task: int, now: float, exclusive: bool = True) -> None:
        """A worker started (its ``post_fork`` record); ``exclusive``: it got its task's lock."""
        if pid in self.workers:
            return
        self.workers[pid] = Worker(pid, task, now)
        if not exclusive:
            holders = [w.pid for w in self.live().values() if w.task == task and w.pid != pid]
            self._violate(
                f"duplicate task id: task {task} pid {pid} started while {holders or 'another'} held it"
            )
        hi = max([self.size] + [size for until, size in self.wide_range if until >= now])
        if not self.c.offset <= task < self.c.offset + hi:
            self._violate(
                f"task {task} (pid {pid}) started outside ids {self.c.offset}..{self.c.offset + hi - 1}"
            )
            return
        if self.stopping_at is not None and now > self.stopping_at + SLACK:
            self._violate(
                f"task {task} (pid {pid}) started after the master was asked to stop ({self.ending})"
            )
        state = self.tasks.get(task)
        if state is not None and state.finished:
            self._violate(f"finished task {task} started again (pid {pid})")
        if state is not None:
            state.due = None
        if (expectation := self._pop_request_for(pid)) is not None:
            self.workers[pid].expectations.append(expectation)

    def began(self, request: int, pid: int) -> None:
        """Worker ``pid`` began serving ``request`` (the app's record)."""
        self.requests[request] = pid
        expectation = self.request_expectations.pop(request, None)
        w = self.workers.get(pid)
        if expectation is not None and w is not None and w.ended_at is None:
            w.expectations.append(expectation)

    def ended(self, line: EndLine, now: float) -> None:
        """The arbiter logged how worker ``line.pid`` ended."""
        w = self.workers.get(line.pid)
        if w is None:
            self.unknown_ends.append((now, line))
            return
        if w.ended_at is not None:
            self._violate(
                f"pid {line.pid} (task {w.task}): its end was logged twice ({w.outcome}, {line.outcome})"
            )
            return
        if line.task != w.task:
            self._violate(f"pid {line.pid} held task {w.task} but its end names task {line.task}")
        allowed = set().union(*(e.outcomes for e in w.expectations)) | self._background(w, now)
        if (
            line.outcome == USR1_DEATH
            and line.outcome not in allowed
            and any(counted(outcome) for outcome in allowed)
            and any(w.spawned_at <= at <= now for at in self.usr1_at)
        ):
            # The master passes USR1 (reopen the logs) on to every worker, also to one on its
            # way out after a crash, whose handlers are gone by then: it dies of it. Counted
            # either way, and replaced alike.
            allowed.add(line.outcome)
            self.notes.append(
                f"task {w.task} (pid {w.pid}): a counted end came as USR1, passed on as it ended"
            )
        if line.outcome not in allowed:
            why = "; ".join(e.why for e in w.expectations) or "nothing was done to it"
            self._violate(
                f"task {w.task} (pid {w.pid}) ended '{line.outcome}'"
                + (" (gave up)" if line.gave_up else "")
                + f", the contract allows {sorted(allowed) or 'no end'} ({why})"
            )
        w.ended_at, w.outcome = now, line.outcome
        task = self.tasks.get(w.task)  # None: a retired id
        if counted(line.outcome):
            self._counted(w, task, line, now)
        elif line.outcome == FINISHED and task is not None:
            task.finished = True
            if self.all_finished() and self.expected_status is None:
                self.ending = "every task finished"
                self.expected_status = frozenset({0})
                self.stopping_at = now
        elif line.outcome == RECYCLED and task is not None and not task.finished:
            self._due(task, now + self.c.replace_seconds + SLACK, f"task {w.task} recycled (pid {w.pid})")
        elif line.outcome == STOPPED and task is not None and not task.finished and now <= self.reload_until:
            self._due(task, now + self.c.respawn_seconds + self._stop_bound(), f"task {w.task} reloaded")
        elif line.gave_up:
            self._violate(
                f"the arbiter gave up on a '{line.outcome}' end of pid {w.pid}, which is not counted"
            )

    def all_finished_line(self, tasks: int, now: float) -> None:
        """The arbiter logged ``All N tasks finished``."""
        self.all_finished_logged = True
        if not self.all_finished() or tasks != self.size:
            unfinished = sorted(self.expected_ids())
            self._violate(
                f"'All {tasks} tasks finished' logged with {self.size} tasks, unfinished: {unfinished}"
            )

    def duplicate(self, task: int, pids: list[int]) -> None:
        """/proc showed several live workers (confirmed alive together) with one task id."""
        self._violate(f"duplicate task id in /proc: task {task} held by pids {sorted(pids)}")

    def gone(self, pid: int, now: float) -> None:
        """/proc shows worker ``pid`` gone while no end of it was logged (yet)."""
        w = self.workers.get(pid)
        if w is not None and w.ended_at is None and w.gone_at is None:
            w.gone_at = now

    def master_exited(self, status: int, now: float) -> None:
        if self.expected_status is None:
            self._violate(f"the master exited with status {status} while the contract says it keeps running")
        elif status not in self.expected_status:
            self._violate(
                f"the master exited with status {status}; after '{self.ending}' the contract says "
                f"{sorted(self.expected_status)}"
            )
        if self.ending == "every task finished" and not self.all_finished_logged:
            self._violate("the master exited without logging that all tasks finished")

    def orphans(self, pids: Mapping[int, float]) -> None:
        """``pids``: processes of the server still alive, with how many seconds after their
        master's end they were last seen alive."""
        late = sorted(pid for pid, after in pids.items() if after > ORPHAN_SECONDS)
        if late:
            self._violate(f"processes outlived their master by more than {ORPHAN_SECONDS:g}s: {late}")

    def tick(self, now: float) -> None:
        """Check every deadline that has passed."""
        for w in self.live().values():
            if w.gone_at is not None and now > w.gone_at + UNKNOWN_PID_GRACE and self.expected_status is None:
                w.gone_at = now + 1e9  # flagged once
                self._violate(f"task {w.task} (pid {w.pid}) is gone but its end was never logged")
            for e in list(w.expectations):
                if e.deadline is not None and now > e.deadline:
                    w.expectations.remove(e)
                    if self.expected_status is None:
                        self._violate(
                            f"task {w.task} (pid {w.pid}): no end logged {e.deadline - w.spawned_at:.1f}s "
                            f"after its start; expected {sorted(e.outcomes)} ({e.why})"
                        )
        for task_id, task in self.tasks.items():
            if task.due is not None and now > task.due:
                task.due = None
                unstarted = not any(w.task == task_id for w in self.live().values())
                if self.expected_status is None and task_id in self.ids() and not task.finished and unstarted:
                    self._violate(f"task {task_id} was not restarted in time ({task.due_why})")
        for seen, line in list(self.unknown_ends):
            if line.pid in self.workers:
                self.unknown_ends.remove((seen, line))
                self.ended(line, now)
            elif now > seen + UNKNOWN_PID_GRACE:
                # A worker stopped before its post_fork hook ran (a TTOU right after a TTIN):
                # judged like any other, from what was done to its task.
                self.unknown_ends.remove((seen, line))
                self.notes.append(f"pid {line.pid} (task {line.task}) ended before its start was recorded")
                self.workers[line.pid] = Worker(line.pid, line.task, seen)
                self.ended(line, now)

    # -- internals ------------------------------------------------------------------------

    def _violate(self, text: str) -> None:
        self.violations.append(text)

    def _stop_bound(self) -> float:
        return self.c.graceful_timeout + 2 * SLACK + 2.0

    def _due(self, task: Task, when: float, why: str) -> None:
        """A replacement must start by ``when``, unless it already has (its start record may
        be read before the end line of the worker it replaces)."""
        task_id = next((t for t, state in self.tasks.items() if state is task), None)
        if not any(w.task == task_id for w in self.live().values()):
            task.due, task.due_why = when, why

    def _background(self, w: Worker, now: float) -> set[str]:
        """Ends allowed for any worker, whatever the soak did to it."""
        allowed = set()
        if self.c.recycles:
            allowed.add(RECYCLED)
        if w.stop_ok or w.task not in self.ids() or self.stopping_at is not None or now <= self.reload_until:
            allowed.add(STOPPED)
        return allowed

    def _pop_request_for(self, pid: int) -> Expectation | None:
        for request, began in self.requests.items():
            if began == pid and request in self.request_expectations:
                return self.request_expectations.pop(request)
        return None

    def _window(self, times: list[float], now: float) -> tuple[int, int]:
        window = self.c.restart_window
        if window is None:
            return len(times), len(times)
        lo = sum(1 for t in times if t > now - window + SLACK)
        hi = sum(1 for t in times if t > now - window - SLACK)
        return lo, hi

    def _counted(self, w: Worker, task: Task | None, line: EndLine, now: float) -> None:
        self.counted_at.append(now)
        lo, hi = self.restarts_range(now)
        task_times = task.restarts if task is not None else []
        task_times.append(now)
        tlo, thi = self._window(task_times, now)
        what = f"task {w.task} (pid {w.pid})"
        count = line.give_up_count if line.gave_up else line.count
        if count is not None and not lo <= count <= hi:
            self._violate(
                f"{what}: restart counted as {count}, the model counts {lo if lo == hi else (lo, hi)}"
            )
        if line.gave_up and line.give_up_task_count is not None and not tlo <= line.give_up_task_count <= thi:
            self._violate(
                f"{what}: task restarts counted as {line.give_up_task_count}, the model counts {tlo}..{thi}"
            )
        cap, task_cap = self.c.max_restarts, self.c.max_task_restarts
        must = lo > cap or (task_cap is not None and tlo > task_cap)
        may = hi > cap or (task_cap is not None and thi > task_cap)
        if line.gave_up:
            if not may:
                self._violate(
                    f"{what}: gave up at {lo}..{hi} restarts (task {tlo}..{thi}); "
                    f"caps max_restarts {cap}, max_task_restarts {task_cap}"
                )
            self.ending = "gave up"
            self.expected_status = frozenset({5})
            self.stopping_at = now
            return
        if must:
            self._violate(
                f"{what}: did not give up at {lo} restarts (task {tlo}); "
                f"caps max_restarts {cap}, max_task_restarts {task_cap}"
            )
        if task is None or task.finished:
            return
        delay = self._backoff(task, now - w.spawned_at, line.delay, what)
        self._due(
            task, now + delay + self.c.replace_seconds + SLACK, f"{what} {line.outcome}, backoff {delay:g}s"
        )

    def _backoff(self, task: Task, uptime: float, logged: float, what: str) -> float:
        """The model's backoff before a failed task's replacement; checks the logged one."""
        if not self.c.backoff:
            if logged:
                self._violate(f"{what}: restart delayed {logged:g}s without backoff")
            return 0.0
        streaks = []
        if uptime < self.c.backoff_max + SLACK:
            streaks.append(task.streak + 1)
        if uptime > self.c.backoff_max - SLACK:
            streaks.append(1)
        delays = {s: min(self.c.backoff * 2.0 ** min(s - 1, 60), self.c.backoff_max) for s in streaks}
        for streak, delay in delays.items():
            if abs(delay - logged) <= 1e-3 * max(1.0, delay):
                task.streak = streak
                return delay
        self._violate(
            f"{what}: restart delayed {logged:g}s, the model's backoff is {sorted(set(delays.values()))}"
        )
        task.streak = streaks[0]
        return max(logged, delays[streaks[0]])
