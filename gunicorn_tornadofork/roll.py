"""A reload's rolling replacement: which old workers are still to be replaced, which are.

Pure bookkeeping, no processes. On HUP the arbiter starts a :class:`Roll` with the running
workers; on each turn of its main loop it asks the roll which old workers to stop next and
tells it which workers are still alive. A task's successor is started by the task table as
soon as its old worker is reaped, so the roll only decides when each old worker is asked to
stop: in task id order, never more than a quarter of the tasks at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Mapping
from dataclasses import dataclass, field

#: The share of the tasks being replaced at once: 4 means a quarter, rounded up.
SHARES = 4


@dataclass
class Roll:
    """Old workers still to stop (``waiting``, task id and pid, lowest id first) and old
    workers asked to stop that are still alive (``stopping``), at most ``width`` at once."""

    width: int
    waiting: deque[tuple[int, int]] = field(default_factory=deque)
    stopping: set[int] = field(default_factory=set)
    stopped: int = 0  # old workers asked to stop by this roll

    @classmethod
    def start(cls, running: Mapping[int, int], tasks: int, previous: Roll | None = None) -> Roll:
        """A roll over ``running`` (task id -> pid of each running worker) for a server of
        ``tasks`` tasks: a quarter of them, rounded up, are replaced at once. A reload during
        a reload starts again with every running worker, the successors already started
        included; the old workers the previous roll was stopping keep their place in the
        width until they are gone."""
        stopping = set(previous.stopping) if previous is not None else set()
        waiting = deque(sorted((task, pid) for task, pid in running.items() if pid not in stopping))
        return cls(max(1, -(-tasks // SHARES)), waiting, stopping)

    def due(self, running: Mapping[int, int], alive: Container[int]) -> list[int]:
        """The old workers to ask to stop now, lowest task id first, so that no more than
        ``width`` are between old and new. ``running`` maps each task id in range to its
        worker not yet asked to stop; ``alive`` holds the pids not yet reaped. A waiting
        worker that no longer runs its task (it crashed, finished, or its id was retired)
        is passed over: its task's next worker already runs the new configuration."""
        self.stopping = {pid for pid in self.stopping if pid in alive}
        due = []
        while self.waiting and len(self.stopping) < self.width:
            task, pid = self.waiting.popleft()
            if running.get(task) == pid and pid in alive:
                self.stopping.add(pid)
                due.append(pid)
        self.stopped += len(due)
        return due

    @property
    def done(self) -> bool:
        """Whether every old worker has been asked to stop and is gone."""
        return not self.waiting and not self.stopping
