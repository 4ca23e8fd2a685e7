"""The README's "Try it" paragraph, claim by claim, against the example it runs."""

from __future__ import annotations

import http.client
import re
import subprocess
from collections.abc import Callable

import pytest
from test_examples import EXAMPLES, example_config

from server import Server, wait_for

RESTART = re.compile(
    r"task (\d) \(pid (\d+)\) killed by signal SIGKILL, restarting \(1 of max_restarts 100\)$", re.M
)


def body(server: Server, path: str) -> tuple[int, int]:
    """(task, pid) from the example app's ``task <id> pid <pid>`` answer."""
    status, text = server.get(path)
    assert status == 200, (status, text)
    match = re.fullmatch(r"task (\d+) pid (\d+)\n", text)
    assert match, text
    return int(match[1]), int(match[2])


def titles(server: Server) -> dict[int, str]:
    """pid -> title of this server's processes as ``pgrep -af 'gunicorn: '`` lists them."""
    out = subprocess.run(["pgrep", "-af", "gunicorn: "], capture_output=True, text=True, check=False).stdout
    pids = {server.pid, *server.worker_pids().values()}
    found = {}
    for line in out.splitlines():
        pid, _, title = line.partition(" ")
        if int(pid) in pids:
            found[int(pid)] = title
    return found


@pytest.mark.compat
@pytest.mark.timeout(60)
def test_try_it(gunicorn: Callable[..., Server]) -> None:
    """Titles through pgrep; /crash closes its connection and the task comes back with the
    same id, logged; four /finish end the server with status 0."""
    server = gunicorn(
        install=False,
        config=example_config("tornadofork.py"),
        app="app:wsgi",
        args=["--chdir", str(EXAMPLES)],
    )
    workers = server.wait_workers(range(4))
    task, pid = body(server, "/")
    assert workers[task] == pid

    expected = {server.pid: "gunicorn: master [app:wsgi] tasks 4/4 restarts 0/100"}
    expected.update({pid: f"gunicorn: worker [app:wsgi] task {task}" for task, pid in workers.items()})
    wait_for(lambda: titles(server) == expected, 10, f"pgrep to list {expected}")

    with pytest.raises(http.client.RemoteDisconnected):
        server.get("/crash")  # curl: "Empty reply from server"
    match = RESTART.search(server.wait_log("killed by signal SIGKILL, restarting"))
    assert match, server.log()
    crashed, old = int(match[1]), int(match[2])
    assert workers[crashed] == old
    new = server.wait_workers(range(4))
    assert new[crashed] != old and all(new[t] == workers[t] for t in range(4) if t != crashed)

    finished = {body(server, "/finish")[0] for _ in range(4)}
    assert finished == {0, 1, 2, 3}
    assert server.wait_exit() == 0
    assert "All 4 tasks finished" in server.log()
