from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server import Server

# Config lines that record every worker hook (gunicorn reads the config before --chdir).
HOOKS = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent / "apps")!r})
from hooks import pre_fork, post_fork, post_worker_init, worker_int, worker_abort
from hooks import worker_exit, child_exit, on_exit
"""


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start gunicorn servers (``gunicorn(options=..., config=..., args=[...])``); after the
    test, kill whatever is left and fail if the test left any process running."""
    servers: list[Server] = []
    count = 0

    def start(**kwargs: Any) -> Server:
        nonlocal count
        count += 1
        directory = tmp_path / f"server{count}"
        directory.mkdir()
        server = Server(directory, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    orphans = {server.pid: server.cleanup() for server in servers if server.proc is not None}
    assert not any(orphans.values()), f"processes that outlived their master: {orphans}"
