"""Workers that drop privileges (``user``/``group``) still die with their arbiter.

The kernel clears a process's parent-death signal when its credentials change, and gunicorn
drops privileges in the worker after the fork, after the plugin armed that signal.
"""

from __future__ import annotations

import os
import pwd
import signal
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from test_compat_workers import ready

from server import Server, answer, pid_alive, wait_for

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root"),
]

Start = Callable[..., Server]
USER, GROUP = "nobody", "nogroup"
# The interpreter running the tests may live where `nobody` cannot read (pyenv under /root):
# load in the master what gunicorn's worker imports only after it dropped privileges
# (random.seed() imports hashlib lazily on Python 3.13).
PRELOAD_STDLIB = "import hashlib\n"


@dataclass(frozen=True)
class Kind:
    worker_class: str
    app: str = "testapp:wsgi"
    module: str | None = None  # the package the class needs


# sync checks its parent only every `timeout / 2` seconds, uvicorn's workers never do: without
# parent-death both outlive a killed master (gthread, gevent, tornado and aiohttp look once a
# second, too often for this test to tell).
KINDS = [
    pytest.param(Kind("sync"), id="sync"),
    pytest.param(Kind("uvicorn_worker.UvicornWorker", "asgiapp:app", "uvicorn_worker"), id="uvicorn"),
]


def uid_of(pid: int) -> list[int]:
    """The real, effective, saved and filesystem uids of ``pid`` (/proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("Uid:"))
    return [int(field) for field in line.split()[1:]]


@pytest.mark.parametrize("kind", KINDS)
def test_unprivileged_workers_die_with_a_killed_master(gunicorn: Start, kind: Kind) -> None:
    """Workers that run as ``nobody`` are gone within 2 s of a SIGKILL of their master."""
    if kind.module:
        pytest.importorskip(kind.module)
    nobody = pwd.getpwnam(USER).pw_uid
    server = gunicorn(
        config=f"workers = 2\nuser = {USER!r}\ngroup = {GROUP!r}\ntimeout = 30\n{PRELOAD_STDLIB}",
        app=kind.app,
        args=["-k", kind.worker_class],
    )
    workers = server.wait_workers([0, 1])
    ready(workers.values())
    for pid in workers.values():
        assert uid_of(pid) == [nobody] * 4
    assert int(answer(server)["pid"]) in workers.values()  # they serve as nobody
    server.signal(signal.SIGKILL)
    wait_for(
        lambda: not any(pid_alive(pid) for pid in workers.values()),
        2,
        "the workers to die with their master",
    )
