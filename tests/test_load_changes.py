"""No request fails through reloads and scaling under steady load from several clients.

The heavier companion of ``test_faults.py::test_no_failed_request_through_changes``: four client
threads loop requests on new connections while the master gets HUP three times, TTIN twice and
TTOU twice, each once the previous change has taken effect and 100 more requests were answered.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from test_faults import READY, Load, Watch, log_tail, restarts

from server import Server

WORKERS = 4
PATHS = ["/", "/sleep/0.05", "/sleep/0.02", "/"]
# (signal, tasks once it has taken effect, wait for it to take effect before the next one)
CHANGES = [
    (signal.SIGHUP, 4, True),
    (signal.SIGTTIN, 5, True),
    (signal.SIGHUP, 4, True),  # a reload reads `workers = 4` again
    (signal.SIGTTIN, 5, True),
    (signal.SIGTTOU, 4, True),
    (signal.SIGHUP, 4, True),
    (signal.SIGTTOU, 3, True),
]
ANSWERED_BETWEEN = 100  # requests answered between two changes


def settled(server: Server, watch: Watch, tasks: int, old: frozenset[int]) -> bool:
    """Exactly ids 0..tasks-1, none held by a worker of ``old``, each ready for signals."""
    found = watch.tasks()
    return (
        sorted(found) == list(range(tasks))
        and not set(found.values()) & old
        and all((server.dir / f"ready-{pid}").exists() for pid in found.values())
    )


@pytest.mark.compat
@pytest.mark.timeout(60)
def test_no_failed_request_under_load_through_reloads_and_scaling(gunicorn: Callable[..., Server]) -> None:
    """Four clients, HUP x3, TTIN x2, TTOU x2: every request is answered with 200, ids stay unique
    and end as 0..2, and nothing is counted as a restart; on gunicorn 23.0, 24.1 and 27.0 alike."""
    server = gunicorn(config=f"workers = {WORKERS}\n" + READY)
    watch = Watch(server.pid)
    watch.until(lambda: settled(server, watch, WORKERS, frozenset()), 20, "the first workers")
    started = time.monotonic()
    with Load(server, PATHS) as load:
        load.more(ANSWERED_BETWEEN)
        replaced: set[int] = set()  # workers that a reload sent since the last settled state
        for number, (sig, tasks, wait) in enumerate(CHANGES, 1):
            load.phase = f"{number}:{sig.name}"
            if sig == signal.SIGHUP:
                replaced |= set(watch.tasks().values())
            server.signal(sig)
            if wait:
                watch.until(
                    lambda t=tasks, old=frozenset(replaced): settled(server, watch, t, old),
                    20,
                    f"{sig.name} to take effect ({tasks} tasks)",
                )
                replaced = set()
            load.more(ANSWERED_BETWEEN)
        load.phase = "end"
        load.more(ANSWERED_BETWEEN)
    elapsed = time.monotonic() - started
    assert elapsed < 40, f"the changes took {elapsed:.1f}s"

    assert not load.failures, (
        f"{len(load.failures)} failed requests: {load.failures[:10]}; answered: {dict(load.ok)}\n"
        + log_tail(server)
    )
    assert sorted(watch.tasks()) == [0, 1, 2]
    assert not restarts(server), log_tail(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
