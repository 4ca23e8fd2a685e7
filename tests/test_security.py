"""The plugin's footprint next to plain gunicorn: no socket of its own, no environment variable
beyond the one the spec names, and the same permissions on the files gunicorn creates."""

from __future__ import annotations

import ast
import os
import re
import signal
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import gunicorn.config
import pytest

import gunicorn_tornadofork
from server import WORKER_PREFIX, Server, proc_title, wait_for

PACKAGE = Path(gunicorn_tornadofork.__file__).parent
#: The environment variables the spec names: the task id, and the directory prometheus_client's
#: multiprocess mode uses (read, never set).
SPEC_VARIABLES = {"GUNICORN_TASK_ID", "PROMETHEUS_MULTIPROC_DIR"}
#: The names through which Python code reaches the process environment.
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
HAS_CONTROL_SOCKET = any(setting.name == "control_socket" for setting in gunicorn.config.KNOWN_SETTINGS)


def socket_families(pid: int) -> Counter[str]:
    """The sockets ``pid`` holds open, counted by the /proc/net table that lists each."""
    inodes = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.append(target[len("socket:[") : -1])
    tables: dict[str, str] = {}
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "unix", "netlink", "packet"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        column = 6 if table == "unix" else 9 if table not in ("netlink", "packet") else -1
        for line in lines:
            fields = line.split()
            if len(fields) > abs(column):
                tables.setdefault(fields[column], table)
    return Counter(tables.get(inode, "other") for inode in inodes)


def is_worker_of(pid: int, master: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return int(fields[1]) == master and fields[0] != "Z" and proc_title(pid).startswith(WORKER_PREFIX)


def workers_of(master: int) -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and is_worker_of(int(n), master)]


def ready(server: Server, count: int) -> None:
    """Wait until ``server`` runs ``count`` workers and, where gunicorn has one, serves its
    control socket (it starts once the first workers are up)."""
    server.wait_serving()
    wait_for(lambda: len(workers_of(server.pid)) == count, 15, f"{count} workers")
    if HAS_CONTROL_SOCKET:
        wait_for(lambda: (server.dir / "gunicorn.ctl").exists(), 15, "the control socket")


def ready_after(server: Server, old: set[int]) -> bool:
    """Whether a reload has replaced all of ``old`` (the pidfile is rewritten before that)."""
    new = set(workers_of(server.pid))
    return len(new) == len(old) and not new & old and server.pidfile.exists()


def pair(gunicorn: Callable[..., Server], workers: int = 2) -> tuple[Server, Server]:
    """The same config run by plain gunicorn and with the plugin; both ready."""
    config = f"workers = {workers}\n"
    plain = gunicorn(config=config, install=False)
    plugin = gunicorn(config=config)
    ready(plain, workers)
    ready(plugin, workers)
    return plain, plugin


def mode(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return stat.filemode(st.st_mode), st.st_uid, st.st_gid


@pytest.mark.compat
def test_opens_no_socket(gunicorn: Callable[..., Server]) -> None:
    """The master and a worker hold exactly the sockets plain gunicorn's do, same kinds."""
    plain, plugin = pair(gunicorn)
    assert sum(socket_families(plain.pid).values()) >= 1, "no listener found: the comparison proves nothing"
    assert socket_families(plugin.pid) == socket_families(plain.pid)
    assert socket_families(workers_of(plugin.pid)[0]) == socket_families(workers_of(plain.pid)[0])
    for server in (plain, plugin):
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0


@pytest.mark.compat
def test_file_permissions_match_plain_gunicorn(gunicorn: Callable[..., Server]) -> None:
    """The pidfile and the control socket get plain gunicorn's mode and owner, also after a
    reload rewrites the pidfile."""
    plain, plugin = pair(gunicorn)
    files = ["gunicorn.pid", "gunicorn.ctl"] if HAS_CONTROL_SOCKET else ["gunicorn.pid"]
    for name in files:
        assert mode(plugin.dir / name) == mode(plain.dir / name), name
    before = {server.pid: set(workers_of(server.pid)) for server in (plain, plugin)}
    for server in (plain, plugin):
        server.signal(signal.SIGHUP)
    wait_for(
        lambda: all(ready_after(server, before[server.pid]) for server in (plain, plugin)),
        20,
        "the reloads to replace every worker",
    )
    assert mode(plugin.pidfile) == mode(plain.pidfile)
    for server in (plain, plugin):
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0


def environment_uses(source: str) -> list[tuple[int, str | None]]:
    """Every use of the process environment in Python ``source``: (line, variable name, or
    None when the name is neither a literal string nor a module-level string constant)."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        if isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def key(expr: ast.AST | None) -> str | None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.Name):
            return constants.get(expr.id)
        return None

    uses: list[tuple[int, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(alias.name in ENV_NAMES for alias in node.names):
            uses.append((node.lineno, None))  # a bare ``environ`` is then beyond this check
        if not (isinstance(node, ast.Attribute) and node.attr in ENV_NAMES):
            continue
        parent = parents.get(node)
        if node.attr in ("environ", "environb") and isinstance(parent, ast.Subscript):
            uses.append((node.lineno, key(parent.slice)))
        elif node.attr in ("environ", "environb") and isinstance(parent, ast.Attribute):
            call = parents.get(parent)
            args = call.args if isinstance(call, ast.Call) and call.func is parent else []
            uses.append((node.lineno, key(args[0]) if args and parent.attr in ("get", "pop") else None))
        elif isinstance(parent, ast.Call) and parent.func is node and parent.args:
            uses.append((node.lineno, key(parent.args[0])))
        else:
            uses.append((node.lineno, None))
    return uses


def test_environment_variables_are_the_spec_ones() -> None:
    """The package's source touches the environment only through the variables the spec
    names, by name."""
    sources = sorted(PACKAGE.glob("*.py"))
    assert sources
    found = {path.name: environment_uses(path.read_text()) for path in sources}
    # The syntax walk must account for every textual mention of the environment.
    for path in sources:
        mentions = len(re.findall(rf"\b(?:{'|'.join(ENV_NAMES)})\b", path.read_text()))
        assert mentions == len(found[path.name]), f"{path.name}: uses the syntax walk does not see"
    unnamed = {name: [line for line, var in uses if var is None] for name, uses in found.items()}
    assert not any(unnamed.values()), f"environment uses without a literal name: {unnamed}"
    assert {var for uses in found.values() for _, var in uses} == SPEC_VARIABLES


def test_environment_check_sees_reads() -> None:
    """The source check finds the usual ways to read a variable, and flags indirect ones."""
    source = (
        "import os\nNAME = 'B'\n"
        "a = os.environ['A']\nb = os.environ.get(NAME)\nc = os.getenv('C', '')\n"
        "d = dict(os.environ)\nfrom os import environ\n"
    )
    uses = environment_uses(source)
    assert sorted(uses, key=lambda u: u[0]) == [(3, "A"), (4, "B"), (5, "C"), (6, None), (7, None)]
