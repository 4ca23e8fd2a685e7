"""The task table: which task ids exist, which worker holds each, and the restart accounting.

Pure bookkeeping, no processes: the arbiter tells it what happened (spawned, signalled,
exited, resized) and asks it what to do next (which id to start, which pids to retire, when
a task's backoff ends). Time comes from an injected clock, so tests can drive it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .exits import Exit
from .policy import NO_POLICY, TASKS_FAILED_STATUS, Action, ExitPolicy, judge


@dataclass(frozen=True)
class Outcome:
    """What a worker's end means for its task and for the server."""

    task_id: int
    pid: int
    exit: Exit
    restarts: int  # counted restarts that count toward max_restarts now, this one included
    replaced: bool  # the task gets a new worker with the same id
    give_up: bool  # a cap is exceeded or a give_up rule matched: the server stops
    task_restarts: int = 0  # this task's counted restarts that count toward max_task_restarts
    delay: float = 0.0  # seconds the replacement waits (backoff)
    action: Action = Action.COUNT  # what the end did to its task
    rule: int | None = None  # the exit_policy rule that chose the action, if one did
    why: str = ""  # why the action: "exit_policy rule 2", "2 restarts > max_task_restarts 1"
    give_up_why: str = ""  # why the server stops: "3 restarts > max_restarts 2", ...
    failed_tasks: int = 0  # tasks in range that have failed, this one included
    counted: bool = True  # the end counted toward the caps (a count action, or the default)

    @property
    def failed(self) -> bool:
        """Whether this end failed its task (a fail_task rule, or the per-task cap)."""
        return self.action is Action.FAIL_TASK


@dataclass(frozen=True)
class TaskState:
    """One task as the control socket and the USR1 log line show it."""

    task_id: int
    pid: int | None
    restarts: int
    uptime: float | None
    done: bool
    waiting: float | None  # seconds left of its backoff
    failed: bool = False  # the task failed (exit_policy or the per-task cap): not replaced


class TaskTable:
    """Task ids ``offset .. offset+size-1``, the live worker of each, finished ids and counted
    restarts.

    A task id is *held* from the moment its worker is spawned until that worker is reaped,
    so no two live workers ever share an id. Counted restarts older than ``restart_window``
    seconds (when set) stop counting; a task that fails restarts after ``backoff`` seconds,
    doubled on each consecutive failure up to ``backoff_max``. An id that leaves the range
    loses all its state: added back, it is a new task.

    Memory stays flat however long a crash loop runs: without ``restart_window`` only counts
    are kept, with it only the times of the restarts still inside the window.
    """

    def __init__(
        self,
        size: int,
        max_restarts: int,
        *,
        offset: int = 0,
        restart_window: float | None = None,
        max_task_restarts: int | None = None,
        backoff: float = 0.0,
        backoff_max: float = 30.0,
        policy: ExitPolicy = NO_POLICY,
        task_cap_action: Action = Action.GIVE_UP,
        max_failed_tasks: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0 or max_restarts < 0 or offset < 0:
            raise ValueError("size, max_restarts and offset must be >= 0")
        self.size = size
        self.offset = offset
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.max_task_restarts = max_task_restarts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.policy = policy
        self.task_cap_action = task_cap_action
        self.max_failed_tasks = max_failed_tasks
        self.clock = clock
        self.restarts = 0  # every counted restart since start
        # With a window: the times of the counted restarts inside it, for the server and for
        # each task. Without one: nothing for the server (`restarts` is the count) and a count
        # per task. Per-task entries exist only for ids in range.
        self._recent: deque[float] = deque()
        self._task_recent: dict[int, deque[float]] = {}
        self._task_count: dict[int, int] = {}
        self._streak: dict[int, int] = {}  # consecutive counted failures of a task
        self._ready_at: dict[int, float] = {}  # task id -> end of its backoff
        self._started: dict[int, float] = {}  # task id -> spawn time of its live worker
        self._pid_of: dict[int, int] = {}  # task id -> pid of its live worker
        self._task_of: dict[int, int] = {}  # pid -> task id
        self._stopping: set[int] = set()  # pids the arbiter asked to stop
        self._done: set[int] = set()  # task ids that finished
        self._failed: set[int] = set()  # task ids that failed

    # -- queries --------------------------------------------------------------------

    def ids(self) -> range:
        """The task ids in range."""
        return range(self.offset, self.offset + self.size)

    def task_of(self, pid: int) -> int | None:
        """The task id held by the worker ``pid``, or None."""
        return self._task_of.get(pid)

    def pid_of(self, task_id: int) -> int | None:
        """The pid of the live worker holding ``task_id``, or None."""
        return self._pid_of.get(task_id)

    def is_stopping(self, pid: int) -> bool:
        """Whether the arbiter has asked the worker ``pid`` to stop."""
        return pid in self._stopping

    def live(self) -> dict[int, int]:
        """Task id -> pid for every live worker, stopping ones included."""
        return dict(self._pid_of)

    def done(self) -> frozenset[int]:
        """The ids of the tasks that finished."""
        return frozenset(self._done)

    def failed(self) -> frozenset[int]:
        """The ids of the tasks that failed."""
        return frozenset(self._failed)

    def pending(self) -> Iterator[int]:
        """The ids, lowest first, that need a worker now: in range, not done, not failed, not
        held, not waiting out a backoff."""
        now = self.clock() if self._ready_at else 0.0
        for task_id in self.ids():
            if task_id in self._pid_of or task_id in self._done or task_id in self._failed:
                continue
            if self._ready_at.get(task_id, now) > now:
                continue
            yield task_id

    def next_pending(self) -> int | None:
        """The lowest id that needs a worker now, or None."""
        # pending()'s test, without a generator: asked before every fork and once more after.
        now = self.clock() if self._ready_at else 0.0
        for task_id in range(self.offset, self.offset + self.size):
            if task_id in self._pid_of or task_id in self._done or task_id in self._failed:
                continue
            if self._ready_at.get(task_id, now) > now:
                continue
            return task_id
        return None

    def next_ready(self) -> float | None:
        """When the earliest backoff of a task still waiting ends (clock time), or None."""
        if not self._ready_at:
            return None  # the common case, checked on every turn of the arbiter's loop
        first, end = self.offset, self.offset + self.size
        waiting = [
            at
            for task_id, at in self._ready_at.items()
            if first <= task_id < end
            and task_id not in self._pid_of
            and task_id not in self._done
            and task_id not in self._failed
        ]
        return min(waiting, default=None)

    def running(self) -> list[int]:
        """The ids, lowest first, whose worker is live and not asked to stop."""
        first, end = self.offset, self.offset + self.size
        return sorted(
            task_id
            for task_id, pid in self._pid_of.items()
            if first <= task_id < end and pid not in self._stopping
        )

    def running_count(self) -> int:
        """How many ids :meth:`running` lists, counted without building the list."""
        if not self._stopping and len(self._pid_of) <= self.size:
            # No worker is stopping, and live workers out of range exist only after a
            # scale-down, which asks them all to stop: in the usual case every live one counts.
            first, end = self.offset, self.offset + self.size
            if all(first <= task_id < end for task_id in self._pid_of):
                return len(self._pid_of)
        return len(self.running())

    def failed_count(self) -> int:
        """How many tasks failed (``len(failed())`` without the copy)."""
        return len(self._failed)

    def all_done(self) -> bool:
        """Whether there is at least one task, every task finished and no worker is left."""
        return self.ended() and not self._failed

    def ended(self) -> bool:
        """Whether there is at least one task, every task finished or failed, and no worker is
        left: nothing runs or waits, nothing will."""
        if self.size <= 0 or self._pid_of:
            return False  # checked after every reap: a live worker settles it at once
        ended = self._done | self._failed
        return all(t in ended for t in self.ids())

    def exit_status(self) -> int | None:
        """The server's exit status once no task is left (0 all finished, 6 one failed), or
        None while a task runs or waits."""
        if not self.ended():
            return None
        return TASKS_FAILED_STATUS if self._failed else 0

    def settled(self) -> bool:
        """Whether every task in range has a live worker not asked to stop, has finished or
        has failed, and no other worker is live: nothing is due until a worker ends or the
        size changes."""
        return len(self._pid_of) + len(self._done) + len(self._failed) == self.size and not self._stopping

    def counted_restarts(self) -> int:
        """The counted restarts that count toward ``max_restarts`` now."""
        if self.restart_window is None:
            return self.restarts
        self._expire(self._recent, self.clock())
        return len(self._recent)

    def states(self) -> list[TaskState]:
        """The state of every task in range, lowest id first."""
        now = self.clock()
        result = []
        for task_id in self.ids():
            pid = self._pid_of.get(task_id)
            started = self._started.get(task_id)
            ready = self._ready_at.get(task_id)
            result.append(
                TaskState(
                    task_id,
                    pid,
                    self._task_restarts(task_id, now),
                    None if pid is None or started is None else now - started,
                    task_id in self._done,
                    None if pid is not None or ready is None or ready <= now else ready - now,
                    task_id in self._failed,
                )
            )
        return result

    # -- events ---------------------------------------------------------------------

    def resize(self, size: int) -> list[int]:
        """Set the number of tasks; returns the pids of live workers whose ids are now
        out of range and were not yet asked to stop (the arbiter retires them)."""
        if size < 0:
            raise ValueError("size must be >= 0")
        if size != self.size:
            self.size = size
            # A retired id that comes back later (scale down, then up) is a new task: nothing
            # of the old one carries over (finished, failed, restart times and counts,
            # backoff). Per-task state is only ever kept for ids in range, so with the size
            # unchanged (the arbiter asks after every reap) there is nothing to drop.
            ids = self.ids()
            for per_task in (self._task_recent, self._task_count, self._streak, self._ready_at):
                for task_id in [t for t in per_task if t not in ids]:
                    del per_task[task_id]
            self._done = {t for t in self._done if t in ids}
            self._failed = {t for t in self._failed if t in ids}
        first, end = self.offset, self.offset + size
        retired = [
            pid
            for task_id, pid in self._pid_of.items()
            if not first <= task_id < end and pid not in self._stopping
        ]
        if retired:
            retired.sort()
        return retired

    def spawned(self, task_id: int, pid: int) -> None:
        """Record that ``pid`` now holds ``task_id``."""
        if task_id in self._pid_of:
            raise ValueError(f"task {task_id} is already held by pid {self._pid_of[task_id]}")
        self._pid_of[task_id] = pid
        self._task_of[pid] = task_id
        self._ready_at.pop(task_id, None)
        self._started[task_id] = self.clock()

    def stop_requested(self, pid: int) -> None:
        """Record that the arbiter asked the worker ``pid`` to stop."""
        if pid in self._task_of:
            self._stopping.add(pid)

    def exited(self, pid: int, exit: Exit) -> Outcome | None:
        """Release the task held by ``pid`` and judge what follows (the exit policy first,
        then the exit table, then the caps); None for an unknown pid."""
        task_id = self._task_of.pop(pid, None)
        if task_id is None:
            return None
        del self._pid_of[task_id]
        self._stopping.discard(pid)
        started = self._started.pop(task_id, None)
        # A retired id is no task any more: it neither finishes nor fails, and its counted
        # end counts for the server only. If it comes back, it is a new task.
        in_range = self.offset <= task_id < self.offset + self.size
        verdict = judge(exit, self.policy)
        action, why = verdict.action, verdict.why()
        counted = action is Action.COUNT
        now = self.clock()
        task_restarts = 0
        if counted:
            self.restarts += 1
            if self.restart_window is not None:
                self._recent.append(now)
            if in_range:
                if self.restart_window is None:
                    self._task_count[task_id] = self._task_count.get(task_id, 0) + 1
                else:
                    self._task_recent.setdefault(task_id, deque()).append(now)
                task_restarts = self._task_restarts(task_id, now)
        restarts = self.counted_restarts()
        give_up, give_up_why = False, ""
        if action is Action.GIVE_UP:
            give_up, give_up_why = True, why
        elif counted and restarts > self.max_restarts:
            give_up, give_up_why = True, f"{restarts} restarts > max_restarts {self.max_restarts}"
        elif counted and self.max_task_restarts is not None and task_restarts > self.max_task_restarts:
            cap = f"{task_restarts} restarts > max_task_restarts {self.max_task_restarts}"
            if self.task_cap_action is Action.FAIL_TASK:
                action, why = Action.FAIL_TASK, cap
            else:
                give_up, give_up_why = True, f"task {task_id}: {cap}"
        if in_range and action is Action.FINISH:
            self._done.add(task_id)
        if in_range and action is Action.FAIL_TASK:
            self._failed.add(task_id)
            if self.max_failed_tasks is not None and len(self._failed) > self.max_failed_tasks:
                give_up = True
                give_up_why = f"{len(self._failed)} failed tasks > max_failed_tasks {self.max_failed_tasks}"
        delay = self._backoff(task_id, now, started) if counted and in_range else 0.0
        replaced = (
            not give_up
            and action in (Action.COUNT, Action.IGNORE)
            and in_range
            and task_id not in self._done
            and task_id not in self._failed
        )
        if replaced and delay:
            self._ready_at[task_id] = now + delay
        return Outcome(
            task_id,
            pid,
            exit,
            restarts,
            replaced,
            give_up,
            task_restarts,
            delay if replaced else 0.0,
            action=action,
            rule=verdict.rule.number if verdict.rule is not None else None,
            why=why,
            give_up_why=give_up_why,
            failed_tasks=len(self._failed),
            counted=counted,
        )

    # -- internals ------------------------------------------------------------------

    def _task_restarts(self, task_id: int, now: float) -> int:
        """The counted restarts of one task that count toward ``max_task_restarts`` now."""
        if self.restart_window is None:
            return self._task_count.get(task_id, 0)
        recent = self._task_recent.get(task_id)
        if recent is None:
            return 0
        self._expire(recent, now)
        if not recent:
            del self._task_recent[task_id]
            return 0
        return len(recent)

    def _expire(self, times: deque[float], now: float) -> None:
        if self.restart_window is None:
            return
        # The age is compared, not `now - window`: a window shorter than the clock's
        # resolution at `now` would otherwise drop the restart that just happened.
        while times and now - times[0] >= self.restart_window:
            times.popleft()

    def _backoff(self, task_id: int, now: float, started: float | None) -> float:
        if not self.backoff:
            return 0.0
        if started is not None and now - started >= self.backoff_max:
            self._streak[task_id] = 0  # it stayed up long enough: start again from `backoff`
        streak = self._streak.get(task_id, 0) + 1
        self._streak[task_id] = streak
        return float(min(self.backoff * 2 ** min(streak - 1, 64), self.backoff_max))
