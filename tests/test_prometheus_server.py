"""``install(server, prometheus=True)`` with real gunicorn, real prometheus_client and real
HTTP: bounded files, counters across restarts, live gauges of dead workers, the arbiter's own
metrics, USR2 and shared directories, refusals, and links planted in the directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from test_compat_signals import read_pid, ready

from server import Server, answer, marked_pids, pid_alive, wait_for

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Start = Callable[..., Server]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Each worker, once booted, writes every metric type (promapp.touch) where the test asks for
# it, and says it booted in the events.
BOOT = """
import os as _os

def post_worker_init(worker):
    import promapp
    {touch}
    {crash}
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"booted {{_os.getpid()}}\\n")
"""
# Each task's worker exits 1 right after its boot until its task has booted more than this.
CRASHES_PER_TASK = 100
CRASH = f"if promapp.boots() <= {CRASHES_PER_TASK}: _os._exit(1)"

KINDS = [
    pytest.param("sync", False, id="sync"),
    pytest.param("gthread", True, id="gthread-preload"),
]
ALL_KINDS = [
    pytest.param("sync", False, id="sync", marks=pytest.mark.compat),
    pytest.param("gthread", True, id="gthread-preload"),
    pytest.param("sync", True, id="sync-preload"),
    pytest.param("gthread", False, id="gthread"),
]


def start(
    gunicorn: Start,
    metrics: Path,
    worker_class: str = "sync",
    preload: bool = False,
    *,
    options: str = "prometheus=True",
    crash: bool = False,
    touch: bool = True,
    config: str = "",
    workers: int = 2,
) -> Server:
    """A server of ``promapp`` writing its metrics into ``metrics``."""
    metrics.mkdir(exist_ok=True)
    args = ["-k", worker_class, *(["--threads", "2"] if worker_class == "gthread" else [])]
    return gunicorn(
        options=options,
        config=f"workers = {workers}\n"
        + BOOT.format(touch="promapp.touch()" if touch else "", crash=CRASH if crash else "")
        + config,
        app="promapp:wsgi",
        args=[*args, *(["--preload"] if preload else [])],
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)},
    )


def scrape(server: Server) -> Samples:
    """The samples of one ``/metrics`` answer: (name, labels) -> value."""
    status, text = server.get("/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape_when(server: Server, expected: float, name: str, **labels: str) -> Samples:
    """The samples of the first /metrics answer in which ``name{labels}`` is ``expected``: the
    arbiter writes its metrics right after it logs what changed them."""
    return wait_for(
        lambda: (s := scrape(server)) and value(s, name, **labels) == expected and s,
        10,
        f"{name}{labels} == {expected} in /metrics",
    )


def db_files(metrics: Path) -> set[str]:
    return {p.name for p in metrics.iterdir() if p.name.endswith(".db")}


def restart_lines(server: Server) -> dict[tuple[str, str], int]:
    """(task, cause) -> counted restarts, from the log's "restarting" lines."""
    counts: dict[tuple[str, str], int] = {}
    for task, how in re.findall(r"task (\d+) \(pid \d+\) (.+?), restarting", server.log()):
        cause = how.removeprefix("killed by signal ") if how.startswith("killed") else how
        cause = re.sub(r"exited with status (\d+)", r"status_\1", cause)
        counts[(task, cause)] = counts.get((task, cause), 0) + 1
    return counts


# -- bounded files -------------------------------------------------------------------------


def expected_files(tasks: Iterable[int]) -> set[str]:
    """The files of the workers of ``tasks`` (every type promapp writes) and of the master."""
    kinds = ("counter", "histogram", "gauge_all", "gauge_liveall", "gauge_livesum")
    return {f"{kind}_task{t}.db" for t in tasks for kind in kinds} | {
        "counter_master.db",
        "gauge_liveall_master.db",
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("worker_class", "preload"), KINDS)
def test_files_stay_bounded_over_200_restarts(
    gunicorn: Start, tmp_path: Path, worker_class: str, preload: bool
) -> None:
    """Each task's worker crashes 100 times right after writing every metric type: afterwards
    the directory holds the files of one boot of each task and no more, its counters went on
    across the restarts, and the arbiter's restart counts match the log."""
    metrics = tmp_path / "metrics"
    server = start(
        gunicorn, metrics, worker_class, preload, options="prometheus=True, max_restarts=1000", crash=True
    )
    ready(server, [0, 1], timeout=90)
    server.wait_log("(200 of max_restarts 1000)")
    # With --preload the master created the app's metrics before install(): their files carry
    # its pid, once.
    master_files = {name for name in db_files(metrics) if name.endswith(f"_{server.pid}.db")}
    assert bool(master_files) == preload
    assert db_files(metrics) - master_files == expected_files([0, 1])
    samples = scrape_when(server, 200, "gunicorn_tornadofork_counted_restarts", pid="master")
    assert value(samples, "app_boots_total") == 2 * (CRASHES_PER_TASK + 1)
    assert restart_lines(server) == {("0", "status_1"): 100, ("1", "status_1"): 100}
    for task in ("0", "1"):
        assert value(samples, "gunicorn_tornadofork_restarts_total", task=task, cause="status_1") == 100
    assert value(samples, "gunicorn_tornadofork_counted_restarts", pid="master") == 200
    assert value(samples, "app_live_workers") == 2


def test_pid_identifiers_grow_without_the_option(gunicorn: Start, tmp_path: Path) -> None:
    """The same crash loop without ``prometheus=True``: prometheus_client names files by pid,
    and every restart adds a set of them."""
    metrics = tmp_path / "metrics"
    server = start(gunicorn, metrics, options="max_restarts=20", crash=True)
    assert server.wait_exit(30) == 5
    # 21 workers crashed after writing their 5 files each (the 21st crash gave up; the other
    # task's last worker may have been stopped before it wrote any).
    assert len(db_files(metrics)) >= 5 * 21 > len(expected_files([0, 1]))


# -- counters, live gauges and the arbiter's metrics ------------------------------------------


class Client:
    """Requests to the app that count the answers it counts (every 200 but /metrics)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.answered = 0

    def get(self, path: str = "/") -> dict[str, str]:
        reply = answer(self.server, path)
        self.answered += 1
        return reply

    def answer_from(self, task: int) -> dict[str, str]:
        return wait_for(
            lambda: (a := self.get())["task"] == str(task) and a, 20, f"an answer from task {task}"
        )


@pytest.mark.parametrize(("worker_class", "preload"), ALL_KINDS)
def test_counts_and_gauges_across_restarts(
    gunicorn: Start, tmp_path: Path, worker_class: str, preload: bool
) -> None:
    """A counter incremented once per answered request equals the answers across restarts; a
    killed worker's live gauges are gone from /metrics before its replacement reports; the
    arbiter's metrics say what its log says."""
    metrics = tmp_path / "metrics"
    server = start(
        gunicorn, metrics, worker_class, preload, options="prometheus=True, max_restarts=10", touch=False
    )
    client = Client(server)
    workers = ready(server, [0, 1])
    killed_at = 0.0
    for victim in (0, 1, 0):
        for task in (0, 1):
            client.answer_from(task)
        before = scrape(server)
        assert value(before, "app_requests_total") == client.answered
        assert value(before, "app_live_workers") == 2
        old = workers[victim]
        assert value(before, "app_live_pid", pid=f"task{victim}") == old
        killed_at = time.time()
        os.kill(old, signal.SIGKILL)
        server.wait_log(f"task {victim} (pid {old}) killed by signal SIGKILL, restarting")
        workers = ready(server, [0, 1], old={victim: old})
        # The replacement has booted but not answered: the dead worker's live gauges are gone
        # (a replacement that created its metrics as it booted shows their initial 0).
        after = scrape(server)
        assert value(after, "app_live_pid", pid=f"task{victim}") in (None, 0)
        assert value(after, "app_live_pid", pid=f"task{1 - victim}") == workers[1 - victim]
        assert value(after, "app_live_workers") == 1
        # The "all" gauge keeps the dead worker's last value under its task's stable label.
        assert value(after, "app_task_pid", pid=f"task{victim}") == old
        assert value(after, "app_requests_total") == client.answered
    # Task 1 finishes with a request that is answered.
    wait_for(lambda: client.get("/finish/1")["task"] == "1", 20, "task 1 to answer /finish/1")
    wait_for(lambda: server.worker_pids().keys() == {0}, 15, "task 1 to finish")
    server.wait_log(") finished")
    client.answer_from(0)
    # The arbiter logs the end as it judges it and writes its metrics right after.
    samples = scrape_when(server, 1, "gunicorn_tornadofork_tasks", pid="master", state="finished")
    assert value(samples, "app_requests_total") == client.answered
    assert restart_lines(server) == {("0", "SIGKILL"): 2, ("1", "SIGKILL"): 1}
    assert value(samples, "gunicorn_tornadofork_restarts_total", task="0", cause="SIGKILL") == 2
    assert value(samples, "gunicorn_tornadofork_restarts_total", task="1", cause="SIGKILL") == 1
    tasks = {
        state: value(samples, "gunicorn_tornadofork_tasks", pid="master", state=state)
        for state in ("running", "waiting", "finished", "failed")
    }
    assert tasks == {"running": 1, "waiting": 0, "finished": 1, "failed": 0}
    assert server.log().count(") finished") == 1
    assert value(samples, "gunicorn_tornadofork_max_restarts", pid="master") == 10
    assert value(samples, "gunicorn_tornadofork_gave_up", pid="master") == 0
    # Task 0's worker started after its last kill; task 1 has none.
    started = value(samples, "gunicorn_tornadofork_task_start_time_seconds", pid="master", task="0")
    assert started is not None and killed_at <= started <= time.time()
    assert value(samples, "gunicorn_tornadofork_task_start_time_seconds", pid="master", task="1") is None


# -- identifiers unique among live processes --------------------------------------------------


def writers(pids: Iterable[int], metrics: Path) -> dict[str, set[int]]:
    """File name -> the pids among ``pids`` that map it writable (prometheus_client writes
    through a shared writable mapping of each of its files)."""
    mapped: dict[str, set[int]] = {}
    for pid in pids:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and "w" in fields[1] and fields[5].startswith(f"{metrics}/"):
                mapped.setdefault(os.path.basename(fields[5]), set()).add(pid)
    return mapped


def assert_one_writer_each(mapped: dict[str, set[int]], workers: dict[int, str]) -> None:
    """Every file has one writer, and each worker (pid -> identifier) writes its own files."""
    shared = {name: pids for name, pids in mapped.items() if len(pids) > 1}
    assert not shared, f"files written by several live processes: {shared}"
    for pid, identifier in workers.items():
        mine = {name for name, pids in mapped.items() if pid in pids}
        assert mine == {f"{kind}_{identifier}.db" for kind in FILE_KINDS}, (pid, mine)


FILE_KINDS = ("counter", "histogram", "gauge_all", "gauge_liveall", "gauge_livesum")

# USR2 runs sys.argv again: for ``python -m gunicorn`` that is gunicorn/__main__.py as a script,
# whose directory then comes first on sys.path and whose gunicorn.http shadows the standard
# library's http (prometheus_client imports http.server). The new master runs ``-m`` again.
REEXEC_AS_MODULE = """
import sys as _sys

def pre_exec(server):
    server.START_CTX["args"] = [_sys.executable, "-m", "gunicorn", *server.START_CTX["args"][2:]]
    server.START_CTX[0] = _sys.executable
"""


@pytest.mark.parametrize(("worker_class", "preload"), KINDS)
def test_usr2_generations_write_no_file_together(
    gunicorn: Start, tmp_path: Path, worker_class: str, preload: bool
) -> None:
    """During a USR2 upgrade both generations number their tasks 0 and 1: the new one writes
    under ``task0-1``, ``task1-1`` and ``master-1``, no file has two writers, and the counters
    add up across the generations. The old master, stopping, takes its live gauges along."""
    metrics = tmp_path / "metrics"
    server = start(gunicorn, metrics, worker_class, preload, config=REEXEC_AS_MODULE)
    client = Client(server)
    old = ready(server, [0, 1])
    for task in (0, 1):
        client.answer_from(task)
    server.signal(signal.SIGUSR2)
    new_master = wait_for(lambda: read_pid(Path(f"{server.pidfile}.2")), 15, "the new master's pidfile")
    try:
        new = ready(server, [0, 1], master=new_master)
        mapped = writers([server.pid, new_master, *old.values(), *new.values()], metrics)
        assert_one_writer_each(
            mapped, {old[0]: "task0", old[1]: "task1", new[0]: "task0-1", new[1]: "task1-1"}
        )
        masters = {"gauge_liveall_master.db", "gauge_liveall_master-1.db"}
        wait_for(lambda: masters <= db_files(metrics), 10, "both masters' gauges")
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        wait_for(lambda: read_pid(server.pidfile) == new_master, 15, "the new master to be promoted")
        files = db_files(metrics)
        assert "gauge_liveall_master.db" not in files
        assert not {f"gauge_{mode}_task{t}.db" for mode in ("liveall", "livesum") for t in (0, 1)} & files
        for task in (0, 1):
            assert client.answer_from(task)["ppid"] == str(new_master)
        samples = scrape(server)
        assert value(samples, "app_requests_total") == client.answered
        assert value(samples, "app_live_workers") == 2
        assert value(samples, "gunicorn_tornadofork_tasks", pid="master-1", state="running") == 2
    finally:
        if pid_alive(new_master):
            os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: not pid_alive(new_master), 20, "the new master to stop")


def test_servers_sharing_a_directory_write_no_file_together(gunicorn: Start, tmp_path: Path) -> None:
    """Two servers on one directory, with ``task_id_offset`` 0 and 1: the task id both run
    (1) gets a slot each, the others keep the bare id; no file has two writers; either
    server's /metrics counts the requests of both."""
    metrics = tmp_path / "metrics"
    first = start(gunicorn, metrics, options="prometheus=True, task_id_offset=0")
    first_workers = ready(first, [0, 1])
    second = start(gunicorn, metrics, options="prometheus=True, task_id_offset=1")
    second_workers = ready(second, [1, 2])
    mapped = writers([first.pid, second.pid, *first_workers.values(), *second_workers.values()], metrics)
    assert_one_writer_each(
        mapped,
        {
            first_workers[0]: "task0",
            first_workers[1]: "task1",
            second_workers[1]: "task1-1",
            second_workers[2]: "task2",
        },
    )
    clients = [Client(first), Client(second)]
    for client, tasks in zip(clients, ([0, 1], [1, 2]), strict=True):
        for task in tasks:
            client.answer_from(task)
    for server in (first, second):
        samples = scrape(server)
        assert value(samples, "app_requests_total") == sum(c.answered for c in clients)
        assert value(samples, "gunicorn_tornadofork_tasks", pid="master", state="running") == 2
        assert value(samples, "gunicorn_tornadofork_tasks", pid="master-1", state="running") == 2


# -- refusals ---------------------------------------------------------------------------------


def refusal_setups(tmp_path: Path, public: Path) -> dict[str, tuple[str, dict[str, str], str, str]]:
    """Case -> (options, environment, config, the refusal's text); ``public``: a directory
    every user can pass through (pytest's own is its owner's alone)."""
    good = tmp_path / "good"
    good.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("")
    link = tmp_path / "link"
    link.symlink_to(good)
    blocked = tmp_path / "blocked" / "prometheus_client"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    shared = tmp_path / "shared"
    (shared / ".tornadofork").mkdir(parents=True)
    (shared / ".tornadofork").chmod(0o777)
    root_only = public / "root-only"
    root_only.mkdir(mode=0o755)
    closed = public / "closed"
    closed.mkdir(mode=0o700)
    unreachable = closed / "metrics"
    unreachable.mkdir()
    unreachable.chmod(0o777)
    needs = "install() option prometheus=True needs PROMETHEUS_MULTIPROC_DIR to name a writable directory"
    env = "PROMETHEUS_MULTIPROC_DIR"
    return {
        "not-a-bool": (
            "prometheus=1",
            {env: str(good)},
            "",
            "option prometheus must be True or False, got 1",
        ),
        "no-client": (
            "prometheus=True",
            {env: str(good), "PYTHONPATH": str(blocked.parent)},
            "",
            "needs prometheus_client >= 0.18.0 (pip install 'gunicorn-tornadofork[prometheus]'): "
            "blocked for the test",
        ),
        "unset": ("prometheus=True", {}, "", f"{needs}; it is unset"),
        "missing": ("prometheus=True", {env: str(tmp_path / "nowhere")}, "", "No such file or directory"),
        "a-file": ("prometheus=True", {env: str(a_file)}, "", "Not a directory"),
        "a-symlink": ("prometheus=True", {env: str(link)}, "", f"{needs}; {str(link)!r}: a symbolic link"),
        "workers-cannot-write": (
            "prometheus=True",
            {env: str(root_only)},
            "user = 'nobody'\ngroup = 'nogroup'\n",
            f"{needs}; {str(root_only)!r}: not writable by the workers' user",
        ),
        "workers-cannot-reach": (
            "prometheus=True",
            {env: str(unreachable)},
            "user = 'nobody'\ngroup = 'nogroup'\n",
            f"{needs}; {str(unreachable)!r}: not reachable by the workers' user (uid 65534, "
            f"groups [65534]): {str(closed)!r} does not let them through",
        ),
        "private-dir-shared": (
            "prometheus=True",
            {env: str(shared)},
            "",
            f"needs {str(shared / '.tornadofork')!r} to be a directory of uid {os.geteuid()} "
            "that only its owner can write",
        ),
    }


REFUSALS = [
    "not-a-bool",
    "no-client",
    "unset",
    "missing",
    "a-file",
    "a-symlink",
    *(
        pytest.param(
            case, marks=pytest.mark.skipif(os.geteuid() != 0, reason="workers of another user need root")
        )
        for case in ("workers-cannot-write", "workers-cannot-reach")
    ),
    "private-dir-shared",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_with_one_line_before_any_fork(
    gunicorn: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Each unfit setup ends the server with one line in the error log and status 1; no worker
    is forked, the pidfile is gone."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    public = Path(tempfile.mkdtemp(prefix="tornadofork-refusal-"))
    public.chmod(0o755)
    try:
        options, env, config, message = refusal_setups(tmp_path, public)[case]
        refused(gunicorn, options, env, config, message)
    finally:
        shutil.rmtree(public)


def refused(gunicorn: Start, options: str, env: dict[str, str], config: str, message: str) -> None:
    """The server exits 1 after the one line ``message``, having forked no worker."""
    server = gunicorn(options=options, config="workers = 2\n" + config, app="promapp:wsgi", env=env)
    assert server.wait_exit() == 1
    lines = [line for line in server.log().splitlines() if "gunicorn_tornadofork:" in line]
    assert len(lines) == 1 and message in lines[0], lines
    assert "[ERROR]" in lines[0]
    assert "Booting worker" not in server.log()
    assert not server.pidfile.exists()


# -- links planted in the directory -----------------------------------------------------------


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """Name -> (content, mode, link count, modification time) of every file in ``directory``."""
    return {
        p.name: (p.read_bytes(), (st := p.stat()).st_mode, st.st_nlink, st.st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


def plant(metrics: Path, name: str, target: Path, hard: bool) -> None:
    """Put a symbolic or hard link to ``target`` under ``name``, atomically, as a worker could."""
    planted = metrics / f".{name}.planted"
    if hard:
        os.link(target, planted)
    else:
        planted.symlink_to(target)
    os.replace(planted, metrics / name)


@pytest.mark.compat
def test_links_planted_in_the_directory_change_nothing_outside(gunicorn: Start, tmp_path: Path) -> None:
    """Symbolic and hard links named as the master's files, and as a worker's live gauges,
    planted before the start and while the server runs, leave the files they point to as
    they were: the master replaces or removes the names, never writes through them."""
    metrics, outside = tmp_path / "metrics", tmp_path / "outside"
    metrics.mkdir()
    outside.mkdir()
    for name in ("a", "b", "c"):
        (outside / name).write_bytes(b"not the master's\n")
    planted = {
        "counter_master.db": (outside / "a", False),
        "gauge_liveall_master.db": (outside / "b", True),
        "gauge_livesum_task0.db": (outside / "c", False),
    }
    before = snapshot(outside)
    for name, (target, hard) in planted.items():
        plant(metrics, name, target, hard)
    server = start(gunicorn, metrics, touch=False)
    workers = ready(server, [0, 1])
    for name in ("counter_master.db", "gauge_liveall_master.db"):
        wait_for(lambda name=name: not (metrics / name).is_symlink(), 10, f"{name} to be replaced")
    # The master removed the planted live gauge before task 0's worker created its own.
    assert not (metrics / "gauge_livesum_task0.db").is_symlink()
    # Planted again while the server runs; a restart makes the master write both files anew
    # and remove task 0's live gauges.
    for name, (target, hard) in planted.items():
        plant(metrics, name, target, hard)
    os.kill(workers[0], signal.SIGKILL)
    server.wait_log(f"task 0 (pid {workers[0]}) killed by signal SIGKILL, restarting")
    ready(server, [0, 1], old={0: workers[0]})
    samples = scrape_when(server, 1, "gunicorn_tornadofork_restarts_total", task="0", cause="SIGKILL")
    assert value(samples, "gunicorn_tornadofork_counted_restarts", pid="master") == 1
    for name in ("counter_master.db", "gauge_liveall_master.db"):
        st = (metrics / name).lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1, name
    assert not (metrics / "gauge_livesum_task0.db").is_symlink()
    assert snapshot(outside) == before


# -- the README's recipe ----------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_recipe(gunicorn: Start, tmp_path: Path) -> None:
    """The README's config file and /metrics view, as written, serve the workers' files and the
    arbiter's metrics."""
    section = README.read_text().split("\n### Prometheus\n", 1)[1].split("\n## ", 1)[0]
    config, view = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    (tmp_path / "readme_metrics.py").write_text(view)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    server = gunicorn(
        config=config,
        install=False,
        app="readme_metrics:metrics",
        args=["--pythonpath", str(tmp_path)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)},
    )
    server.wait_workers([0, 1, 2, 3])
    samples = scrape_when(server, 4, "gunicorn_tornadofork_tasks", pid="master", state="running")
    assert value(samples, "gunicorn_tornadofork_max_restarts", pid="master") == 100


# -- stale live gauges ------------------------------------------------------------------------


def test_stale_live_gauges_do_not_report(gunicorn: Start, tmp_path: Path) -> None:
    """Live gauges left by a server that was killed (no cleanup ran) are gone once the next
    server starts on the directory; a task retired by TTOU takes its live gauges along."""
    metrics = tmp_path / "metrics"
    killed = start(gunicorn, metrics, workers=3)
    ready(killed, [0, 1, 2])
    assert value(scrape_when(killed, 3, "app_live_workers"), "app_live_pid", pid="task2") is not None
    killed.signal(signal.SIGKILL)
    killed.wait_exit()
    wait_for(lambda: not marked_pids(killed.mark), 10, "the killed server's workers to die")
    assert "gauge_livesum_task2.db" in db_files(metrics)
    server = start(gunicorn, metrics, workers=2)
    ready(server, [0, 1])
    samples = scrape_when(server, 2, "app_live_workers")
    assert value(samples, "app_live_pid", pid="task2") is None
    server.signal(signal.SIGTTOU)
    server.wait_workers([0])
    # One scrape reads the files one by one: it can list a file the master removes before
    # it is read, and show the retired task's gauges half gone. Both go, the next one shows.
    samples = wait_for(
        lambda: (
            (s := scrape(server))
            and value(s, "app_live_workers") == 1
            and value(s, "app_live_pid", pid="task1") is None
            and s
        ),
        10,
        "task 1's live gauges to go",
    )
    assert value(samples, "app_task_pid", pid="task1") is not None  # an "all" gauge stays


def test_a_preload_masters_live_gauges_go_with_it(gunicorn: Start, tmp_path: Path) -> None:
    """With --preload the app's metrics are created in the master, under its pid: its live
    gauges go when it stops, and those of a master that was killed go when the next server
    starts, so a livesum counts live processes only."""
    metrics = tmp_path / "metrics"
    stopped = start(gunicorn, metrics, preload=True)
    ready(stopped, [0, 1])
    assert f"gauge_livesum_{stopped.pid}.db" in db_files(metrics)
    stopped.signal(signal.SIGTERM)
    assert stopped.wait_exit() == 0
    assert f"gauge_livesum_{stopped.pid}.db" not in db_files(metrics)
    killed = start(gunicorn, metrics, preload=True)
    ready(killed, [0, 1])
    killed.signal(signal.SIGKILL)
    killed.wait_exit()
    wait_for(lambda: not marked_pids(killed.mark), 10, "the killed server's workers to die")
    assert f"gauge_livesum_{killed.pid}.db" in db_files(metrics)
    server = start(gunicorn, metrics)
    ready(server, [0, 1])
    assert f"gauge_livesum_{killed.pid}.db" not in db_files(metrics)
    assert value(scrape_when(server, 2, "app_live_workers"), "app_live_workers") == 2


def test_a_reload_keeps_the_metrics_directory(gunicorn: Start, tmp_path: Path) -> None:
    """A HUP whose config file names another PROMETHEUS_MULTIPROC_DIR (raw_env) is logged as
    an error and the directory stays: the workers keep writing where the arbiter publishes."""
    metrics, other = tmp_path / "metrics", tmp_path / "other"
    other.mkdir()
    server = start(gunicorn, metrics, config=f"raw_env = ['PROMETHEUS_MULTIPROC_DIR={metrics}']\n")
    ready(server, [0, 1])
    server.config_path.write_text(server.config_path.read_text().replace(f"={metrics}'", f"={other}'"))
    old = server.wait_workers([0, 1])
    server.signal(signal.SIGHUP)
    wait_for(
        lambda: not set(old.values()) & set(server.wait_workers([0, 1]).values()),
        20,
        "the reload to replace both workers",
    )
    server.wait_log("cannot change on reload")
    assert value(scrape_when(server, 2, "app_live_workers"), "app_live_workers") == 2
    assert not list(other.iterdir())
