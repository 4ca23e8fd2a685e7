"""The task table: which task ids exist, which worker holds each, and the restart count.

Pure bookkeeping, no processes: the arbiter tells it what happened (spawned, signalled,
exited, resized) and asks it what to do next (which id to start, which pids to retire).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .exits import Ending, Exit


@dataclass(frozen=True)
class Outcome:
    """What a worker's end means for its task and for the server."""

    task_id: int
    pid: int
    exit: Exit
    restarts: int  # counted restarts so far, this one included
    replaced: bool  # the task gets a new worker with the same id
    give_up: bool  # the restart count has just exceeded max_restarts


class TaskTable:
    """Task ids ``0 .. size-1``, the live worker of each, finished ids and counted restarts.

    A task id is *held* from the moment its worker is spawned until that worker is reaped,
    so no two live workers ever share an id.
    """

    def __init__(self, size: int, max_restarts: int) -> None:
        if size < 0 or max_restarts < 0:
            raise ValueError("size and max_restarts must be >= 0")
        self.size = size
        self.max_restarts = max_restarts
        self.restarts = 0
        self._pid_of: dict[int, int] = {}  # task id -> pid of its live worker
        self._task_of: dict[int, int] = {}  # pid -> task id
        self._stopping: set[int] = set()  # pids the arbiter asked to stop
        self._done: set[int] = set()  # task ids that finished

    # -- queries --------------------------------------------------------------------

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

    def pending(self) -> Iterator[int]:
        """The ids, lowest first, that need a worker: in range, not done, not held."""
        for task_id in range(self.size):
            if task_id not in self._pid_of and task_id not in self._done:
                yield task_id

    def next_pending(self) -> int | None:
        """The lowest id that needs a worker, or None."""
        return next(self.pending(), None)

    def running(self) -> list[int]:
        """The ids, lowest first, whose worker is live and not asked to stop."""
        return sorted(
            task_id
            for task_id, pid in self._pid_of.items()
            if task_id < self.size and pid not in self._stopping
        )

    def all_done(self) -> bool:
        """Whether there is at least one task, every task finished and no worker is left."""
        return self.size > 0 and not self._pid_of and all(t in self._done for t in range(self.size))

    # -- events ---------------------------------------------------------------------

    def resize(self, size: int) -> list[int]:
        """Set the number of tasks; returns the pids of live workers whose ids are now
        out of range and were not yet asked to stop (the arbiter retires them)."""
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        # A retired id that comes back later (scale down, then up) is a new task.
        self._done = {t for t in self._done if t < size}
        return sorted(
            pid for task_id, pid in self._pid_of.items() if task_id >= size and pid not in self._stopping
        )

    def spawned(self, task_id: int, pid: int) -> None:
        """Record that ``pid`` now holds ``task_id``."""
        if task_id in self._pid_of:
            raise ValueError(f"task {task_id} is already held by pid {self._pid_of[task_id]}")
        self._pid_of[task_id] = pid
        self._task_of[pid] = task_id

    def stop_requested(self, pid: int) -> None:
        """Record that the arbiter asked the worker ``pid`` to stop."""
        if pid in self._task_of:
            self._stopping.add(pid)

    def exited(self, pid: int, exit: Exit) -> Outcome | None:
        """Release the task held by ``pid`` and judge what follows; None for an unknown pid."""
        task_id = self._task_of.pop(pid, None)
        if task_id is None:
            return None
        del self._pid_of[task_id]
        self._stopping.discard(pid)
        if exit.ending is Ending.FINISHED:
            self._done.add(task_id)
        give_up = False
        if exit.ending.counted:
            self.restarts += 1
            give_up = self.restarts > self.max_restarts
        replaced = not give_up and not exit.ending.halts and task_id < self.size and task_id not in self._done
        return Outcome(task_id, pid, exit, self.restarts, replaced, give_up)
