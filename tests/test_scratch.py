from __future__ import annotations

import os
import signal

from server import answer, wait_for


def test_kill_respawn_and_giveup(gunicorn):
    server = gunicorn(options="max_restarts=1", config="workers = 2\n")
    w = server.wait_workers([0, 1])
    os.kill(w[1], signal.SIGKILL)
    w2 = wait_for(lambda: (x := server.worker_pids()).get(1) not in (None, w[1]) and len(x) == 2 and x, 10)
    assert w2[0] == w[0]
    server.wait_log("restarting (1 of max_restarts 1)")
    os.kill(w2[0], signal.SIGTERM)
    assert server.wait_exit() == 5
    print(server.log()[-1500:])
    assert "Too many child restarts, giving up" in server.log()
    assert not server.pidfile.exists()


def test_finish_all(gunicorn):
    server = gunicorn(options="max_restarts=0", config="workers = 2\n")
    server.wait_workers([0, 1])
    seen = set()
    while len(seen) < 2:
        a = answer(server, "/finish")
        seen.add(a["task"])
    assert server.wait_exit() == 0
    print(server.log()[-1500:])


def test_recycle(gunicorn):
    server = gunicorn(options="max_restarts=0", config="workers = 1\nmax_requests = 2\n")
    server.wait_workers([0])
    pids = set()
    for _ in range(7):
        server.wait_serving()
        pids.add(answer(server)["pid"])
    assert len(pids) >= 3
    assert server.running()


def test_hup(gunicorn):
    server = gunicorn(options="max_restarts=0", config="workers = 3\n")
    old = server.wait_workers([0, 1, 2])
    server.signal(signal.SIGHUP)
    new = wait_for(lambda: (x := server.worker_pids()) and len(x) == 3 and not set(x.values()) & set(old.values()) and x, 20)
    print(server.log()[-3000:])
    assert server.running()


def test_ttin_ttou(gunicorn):
    server = gunicorn(options="max_restarts=0", config="workers = 2\n")
    old = server.wait_workers([0, 1])
    server.signal(signal.SIGTTIN)
    server.wait_workers([0, 1, 2])
    server.signal(signal.SIGTTOU)
    server.signal(signal.SIGTTOU)
    server.wait_workers([0])
    assert server.running()
