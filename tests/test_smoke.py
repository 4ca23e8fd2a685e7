from __future__ import annotations

import signal

from server import answer, wait_for


def test_ids_titles_and_env(gunicorn):
    server = gunicorn(config="workers = 3\n")
    workers = server.wait_workers([0, 1, 2])
    seen = {}
    wait_for(lambda: seen.update({int(a["task"]): a for a in [answer(server)]}) or len(seen) == 3, 20)
    for task, a in seen.items():
        assert int(a["pid"]) == workers[task]
        assert a["env"] == str(task)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
