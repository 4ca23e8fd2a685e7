"""The floor: ``tornado.process.fork_processes`` with a trivial child.

``python tornado_floor.py N`` reports itself ready (``M``) as the benchmark's hooks do for
gunicorn, forks N children with tornado, and each child reports ready (``R`` with its task id)
then waits for a signal. tornado restarts a child that dies, with the same task id.
"""

from __future__ import annotations

import signal
import sys

from benchhooks import report
from tornado.process import fork_processes, task_id


def main() -> None:
    """Fork the children; runs until killed."""
    count = int(sys.argv[1])
    report("M", -1)
    fork_processes(count, max_restarts=10**9)
    task = task_id()
    report("R", -1 if task is None else task)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
