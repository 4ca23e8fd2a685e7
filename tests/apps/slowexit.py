"""A ``worker_exit`` hook that takes its time, as one that flushes a queue or closes pools.

While the file named by ``TF_SLOW_EXIT`` exists, the hook sleeps for the number of seconds
it holds; without the file it returns at once, so that a test can end its server quickly.
"""

from __future__ import annotations

import os
import time
from typing import Any


def worker_exit(server: Any, worker: Any) -> None:
    try:
        with open(os.environ["TF_SLOW_EXIT"]) as f:
            seconds = float(f.read())
    except (KeyError, OSError, ValueError):
        return
    time.sleep(seconds)
