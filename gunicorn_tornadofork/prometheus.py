"""prometheus_client's multiprocess mode keyed by task id, and the arbiter's supervision metrics.

Each worker writes its metric files under an identifier made of its task id (``task3``) instead
of its pid, so a replacement continues its predecessor's files. Identifiers stay unique among
live processes through *slots*: before the first worker of a task is forked, the master takes
the lowest free slot of that task id, a lock it holds as long as it lives (and the task's worker
with it). Slot 0 is the bare ``task3``; a second server running task 3 on the same directory at
once (the new generation of a USR2 upgrade, a server with an overlapping ``task_id_offset``)
gets ``task3-1``. Files are thus bounded by task ids x slots x metric types.

The master never writes a file a worker could have planted: its locks and temporary files live
in a subdirectory it owns and only it can write (``.tornadofork``), reached through directory
file descriptors; its metric files are written there and renamed into place, which replaces a
planted name instead of following it. It removes names (a dead worker's live gauges), never
opens them.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import stat
import struct
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from .exits import Ending, Exit, signal_name
from .options import OptionError, Options
from .tasks import Outcome, TaskTable

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: The oldest prometheus_client whose file format (a value and a timestamp per entry) and
#: multiprocess value class this module is tested with.
OLDEST_CLIENT = "0.18.0"
#: The master's own subdirectory of the metrics directory: slot locks and temporary files.
PRIVATE_DIR = ".tornadofork"
#: prometheus_client's gauge modes whose files only count while their process lives.
LIVE_MODES = ("liveall", "livesum", "livemax", "livemin", "livemostrecent")
PREFIX = "gunicorn_tornadofork_"

_TASK_ID = re.compile(r"task(0|[1-9][0-9]*)(?:-([1-9][0-9]*))?")
_MASTER_ID = re.compile(r"master(?:-([1-9][0-9]*))?")
_LIVE_FILE = re.compile(r"gauge_(live[a-z]*)_([^_]+)\.db")
_INTEGER = struct.Struct("i")
_VALUE = struct.Struct("dd")


# -- identifiers (pure) -----------------------------------------------------------------------


def task_identifier(task_id: int, slot: int) -> str:
    """The multiprocess identifier of the worker of ``task_id`` in ``slot``: ``task3``,
    ``task3-1``. Never all digits, so it cannot meet a pid-named file."""
    return f"task{task_id}" if slot == 0 else f"task{task_id}-{slot}"


def master_identifier(slot: int) -> str:
    """The identifier of the master's own files in ``slot``: ``master``, ``master-1``."""
    return "master" if slot == 0 else f"master-{slot}"


def lock_name(identifier: str) -> str:
    """The name of the lock file, in the master's subdirectory, that guards ``identifier``."""
    return f"{identifier}.lock"


def parse_identifier(identifier: str) -> str | None:
    """The lock name guarding ``identifier`` if it is one of this module's, else None."""
    if _TASK_ID.fullmatch(identifier) or _MASTER_ID.fullmatch(identifier):
        return lock_name(identifier)
    return None


def live_files(names: Iterable[str]) -> dict[str, list[str]]:
    """Identifier -> the live-gauge files (``gauge_live*_<identifier>.db``) among ``names``,
    for the identifiers this module gives out."""
    found: dict[str, list[str]] = {}
    for name in names:
        match = _LIVE_FILE.fullmatch(name)
        if match and parse_identifier(match[2]) is not None:
            found.setdefault(match[2], []).append(name)
    return {identifier: sorted(files) for identifier, files in sorted(found.items())}


def live_file_names(identifier: str) -> list[str]:
    """The live-gauge file names prometheus_client uses for ``identifier``."""
    return [f"gauge_{mode}_{identifier}.db" for mode in LIVE_MODES]


def writable_by(st: os.stat_result, uid: int, gids: Collection[int]) -> bool:
    """Whether a process of ``uid`` and groups ``gids`` may create files in the directory
    ``st`` describes, from its mode bits; root always may."""
    return _allows(st, uid, gids, write=True)


def searchable_by(st: os.stat_result, uid: int, gids: Collection[int]) -> bool:
    """Whether a process of ``uid`` and groups ``gids`` may pass through the directory ``st``
    describes, from its mode bits; root always may."""
    return _allows(st, uid, gids, write=False)


def _allows(st: os.stat_result, uid: int, gids: Collection[int], write: bool) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = stat.S_IXUSR | (stat.S_IWUSR if write else 0)
    elif st.st_gid in gids:
        bits = stat.S_IXGRP | (stat.S_IWGRP if write else 0)
    else:
        bits = stat.S_IXOTH | (stat.S_IWOTH if write else 0)
    return st.st_mode & bits == bits


def closed_ancestor(path: str, uid: int, gids: Collection[int]) -> str | None:
    """The first directory above ``path`` that a process of ``uid`` and groups ``gids``
    cannot pass through, or None when it can reach ``path``."""
    ancestors = []
    parent = os.path.dirname(os.path.realpath(path))
    while True:
        ancestors.append(parent)
        if parent == os.path.dirname(parent):
            break
        parent = os.path.dirname(parent)
    for ancestor in reversed(ancestors):
        if not searchable_by(os.stat(ancestor), uid, gids):
            return ancestor
    return None


def dead_pid_live_files(names: Iterable[str], alive: Callable[[int], bool]) -> list[str]:
    """The live-gauge files among ``names`` named after a pid (prometheus_client's default
    identifier: a ``--preload`` master's, a process a worker forked) whose process is gone."""
    found = []
    for name in names:
        match = _LIVE_FILE.fullmatch(name)
        if match and match[2].isdigit() and match[2] == str(int(match[2])) and not alive(int(match[2])):
            found.append(name)
    return sorted(found)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, as another user's
    return True


def worker_groups(uid: int, gid: int, initgroups: bool) -> set[int]:
    """The groups of a worker that gunicorn switched to ``uid``/``gid``: the user's other
    groups too with gunicorn's ``initgroups``."""
    if not initgroups:
        return {gid}
    try:
        return {gid, *os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)}
    except (KeyError, OSError):
        return {gid}


# -- the supervision metrics (pure) ------------------------------------------------------------


def restart_cause(exit: Exit) -> str:
    """The ``cause`` label of a counted restart: ``SIGKILL``, ``status_1`` or ``timeout``."""
    if exit.ending is Ending.TIMED_OUT:
        return "timeout"
    if exit.signal is not None:
        return signal_name(exit.signal)
    return f"status_{exit.status}"


@dataclass(frozen=True)
class Sample:
    """One sample of a metric file: metric, sample name, labels, help, value."""

    metric: str
    name: str
    labels: tuple[tuple[str, str], ...]
    help: str
    value: float

    def key(self) -> str:
        """prometheus_client's key for the sample in a metric file."""
        return json.dumps([self.metric, self.name, dict(self.labels), self.help], sort_keys=True)


HELP = {
    "restarts": "Counted worker restarts, by task id and cause (signal, exit status or timeout).",
    "tasks": "Tasks by state: running (a live worker), waiting (backoff), finished, failed.",
    "task_start_time_seconds": "Start time of each task's current worker, seconds since the epoch.",
    "gave_up": "1 once the arbiter gave up (a cap was exceeded, or a give_up rule matched).",
    "counted_restarts": "Counted restarts that count toward max_restarts now.",
    "max_restarts": "The configured max_restarts.",
    "restart_window_seconds": "The configured restart_window.",
    "max_task_restarts": "The configured max_task_restarts.",
    "max_failed_tasks": "The configured max_failed_tasks.",
}


def _sample(short: str, value: float, suffix: str = "", **labels: str) -> Sample:
    metric = PREFIX + short
    return Sample(metric, metric + suffix, tuple(sorted(labels.items())), HELP[short], float(value))


def counter_samples(restarts: Mapping[tuple[int, str], int]) -> list[Sample]:
    """The counter ``gunicorn_tornadofork_restarts_total{task, cause}``."""
    return [
        _sample("restarts", count, "_total", task=str(task), cause=cause)
        for (task, cause), count in sorted(restarts.items())
    ]


def gauge_samples(
    table: TaskTable, options: Options, gave_up: bool, started: Mapping[int, float]
) -> list[Sample]:
    """The arbiter's gauges for the state of ``table``; ``started`` maps a task id to the
    start time (epoch seconds) of its current worker."""
    states = table.states()
    running = table.running()
    waiting = sum(1 for s in states if s.waiting is not None and s.pid is None)
    samples = [
        _sample("tasks", len(running), state="running"),
        _sample("tasks", waiting, state="waiting"),
        _sample("tasks", len(table.done()), state="finished"),
        _sample("tasks", len(table.failed()), state="failed"),
    ]
    samples += [
        _sample("task_start_time_seconds", started[task], task=str(task))
        for task in running
        if task in started
    ]
    samples += [
        _sample("gave_up", int(gave_up)),
        _sample("counted_restarts", table.counted_restarts()),
        _sample("max_restarts", options.max_restarts),
    ]
    caps = {
        "restart_window_seconds": options.restart_window,
        "max_task_restarts": options.max_task_restarts,
        "max_failed_tasks": options.max_failed_tasks,
    }
    samples += [_sample(name, value) for name, value in caps.items() if value is not None]
    return samples


def encode(samples: Iterable[Sample]) -> bytes:
    """A metric file in prometheus_client's format: the used length, then for each entry the
    key's length, the key padded to 8 bytes, its value and a zero timestamp."""
    body = bytearray()
    for sample in samples:
        key = sample.key().encode()
        padded = key + b" " * (8 - (len(key) + 4) % 8)
        body += _INTEGER.pack(len(key)) + padded + _VALUE.pack(sample.value, 0.0)
    return _INTEGER.pack(8 + len(body)) + b"\0" * 4 + bytes(body)


# -- the worker's side ----------------------------------------------------------------------

# The identifier of this process, with the pid it belongs to: a process the worker forks
# (multiprocessing, a subprocess) is a process of its own and falls back to its pid.
_identity: tuple[str, int] | None = None
# Set in the master for the length of one fork: the identifier and lock the child takes.
_forking: tuple[str, int] | None = None
# The master's descriptors that a new worker closes (every lock but its own, the directories).
_master_fds: set[int] = set()
_at_fork_registered = False


def process_identifier() -> str | int:
    """The multiprocess identifier of the calling process: its task's in a worker, its pid
    elsewhere (as prometheus_client's default)."""
    if _identity is not None and _identity[1] == os.getpid():
        return _identity[0]
    return os.getpid()


def _after_fork_in_child() -> None:
    global _identity, _forking
    if _forking is None:
        return
    identifier, own_lock = _forking
    _identity, _forking = (identifier, os.getpid()), None
    # The worker keeps the lock of its identifier: should the master die first, the
    # identifier stays taken until this worker is gone too.
    for fd in _master_fds - {own_lock}:
        with suppress(OSError):
            os.close(fd)
    _master_fds.clear()


def import_client() -> Any:
    """prometheus_client, imported; OptionError if it cannot be."""
    try:
        import prometheus_client
        import prometheus_client.values
    except ImportError as exc:
        raise OptionError(
            f"install() option prometheus=True needs prometheus_client >= {OLDEST_CLIENT} "
            f"(pip install 'gunicorn-tornadofork[prometheus]'): {exc}"
        ) from None
    return prometheus_client


def adopt_value_class() -> None:
    """Make prometheus_client's multiprocess value class ask :func:`process_identifier`.

    prometheus_client keeps the identifier function in the closure of the class it chose at
    import, with the files it opened; the class compares the identifier on every use and
    re-opens its files when it changes. Swapping the function in that closure, rather than the
    class, reaches the metrics that exist already (``--preload`` creates them in the master)
    and keeps one set of open files per process. Raises OptionError if the class is not one.
    """
    prometheus_client = import_client()
    values = prometheus_client.values
    cls = values.ValueClass
    check = getattr(cls, "_MmapedValue__check_for_pid_change", None)
    code = getattr(check, "__code__", None)
    cells = dict(
        zip(getattr(code, "co_freevars", ()), getattr(check, "__closure__", None) or (), strict=False)
    )
    if not getattr(cls, "_multiprocess", False):
        raise OptionError(
            f"install() option prometheus=True: prometheus_client was imported before {ENV_DIR} "
            "was set, so its metrics are not in multiprocess mode"
        )
    if "process_identifier" not in cells or "pid" not in cells:
        version = getattr(prometheus_client, "__version__", None) or _version()
        raise OptionError(
            f"install() option prometheus=True needs prometheus_client >= {OLDEST_CLIENT} "
            f"whose multiprocess values this version knows, got {version}"
        )
    cells["process_identifier"].cell_contents = process_identifier


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prometheus_client")
    except PackageNotFoundError:
        return "an unknown version"


# -- the master's side ----------------------------------------------------------------------


def directory() -> str:
    """The metrics directory prometheus_client's multiprocess mode uses ("" when unset)."""
    return os.environ.get(ENV_DIR, "")


def _open_directory(path: str, workers: tuple[int, set[int]] | None) -> int:
    """A descriptor of the metrics directory ``path``, checked writable by the master and by
    ``workers`` (uid, groups) when they run as another user; OptionError naming the problem."""
    where = f"install() option prometheus=True needs {ENV_DIR} to name a writable directory"
    if not path:
        raise OptionError(f"{where}; it is unset")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        kind = "a symbolic link" if os.path.islink(path) else exc.strerror or "cannot be opened"
        raise OptionError(f"{where}; {path!r}: {kind}") from None
    problem = None
    if not os.access(path, os.W_OK | os.X_OK):
        problem = "not writable by the master"
    elif workers is not None:
        who = f"the workers' user (uid {workers[0]}, groups {sorted(workers[1])})"
        closed = closed_ancestor(path, *workers)
        if closed is not None:
            problem = f"not reachable by {who}: {closed!r} does not let them through"
        elif not writable_by(os.fstat(fd), *workers):
            problem = f"not writable by {who}"
    if problem:
        os.close(fd)
        raise OptionError(f"{where}; {path!r}: {problem}")
    return fd


def _open_private(top: int, path: str) -> int:
    """The master's own subdirectory, created if missing; it must be a directory the master's
    user owns and only it can write, else OptionError."""
    try:
        os.mkdir(PRIVATE_DIR, 0o755, dir_fd=top)
    except FileExistsError:
        pass
    except OSError as exc:
        raise OptionError(
            f"install() option prometheus=True cannot create {os.path.join(path, PRIVATE_DIR)!r}: "
            f"{exc.strerror}"
        ) from None
    where = os.path.join(path, PRIVATE_DIR)
    try:
        fd = os.open(PRIVATE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
    except OSError:
        fd = -1
    if fd >= 0:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return fd
        os.close(fd)
    raise OptionError(
        f"install() option prometheus=True needs {where!r} to be a directory of uid "
        f"{os.geteuid()} that only its owner can write; remove it"
    )


@dataclass
class Exporter:
    """The master's metrics directory state: its descriptors, the identifiers it holds (one
    slot lock each), and what it has published."""

    path: str
    top: int  # descriptor of the metrics directory
    private: int  # descriptor of the master's subdirectory in it
    options: Options
    master_lock: int = -1
    master_id: str = ""
    held: dict[int, tuple[str, int]] = field(default_factory=dict)  # task -> (identifier, lock fd)
    live: dict[int, str] = field(default_factory=dict)  # pid -> identifier of a live worker
    restarts: dict[tuple[int, str], int] = field(default_factory=dict)
    gave_up: bool = False
    started: dict[int, float] = field(default_factory=dict)  # task -> its worker's start (epoch)
    swept: float = 0.0  # when the last sweep ran (monotonic)
    pid: int = field(default_factory=os.getpid)  # the master's
    published: dict[str, bytes] = field(default_factory=dict)  # file name -> content

    @classmethod
    def open(cls, options: Options, path: str, workers: tuple[int, set[int]] | None = None) -> Exporter:
        """Check the directory, take a master slot and sweep stale live gauges; OptionError
        when prometheus_client or the directory is unfit. ``workers``: the uid and groups the
        workers switch to, if they do. Nothing is forked yet."""
        global _at_fork_registered
        import_client()
        top = _open_directory(path, workers)
        try:
            private = _open_private(top, path)
        except OptionError:
            os.close(top)
            raise
        exporter = cls(path, top, private, options)
        try:
            exporter.master_id, exporter.master_lock = exporter._claim(master_identifier)
        except OSError as exc:
            raise OptionError(
                f"install() option prometheus=True cannot take a lock in {path!r}: {exc.strerror}"
            ) from None
        adopt_value_class()
        if not _at_fork_registered:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _at_fork_registered = True
        exporter.sweep()
        return exporter

    # -- slots ---------------------------------------------------------------------------

    def _claim(self, identifier: Callable[[int], str]) -> tuple[str, int]:
        """Take the lowest free slot for ``identifier(slot)``; (identifier, lock fd)."""
        slot = 0
        while True:
            name = identifier(slot)
            fd = os.open(
                lock_name(name),
                os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=self.private,
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                slot += 1
                continue
            _master_fds.add(fd)
            return name, fd

    def _take_if_free(self, identifier: str) -> int | None:
        """A descriptor locking ``identifier`` if no live process holds it, else None. A lock
        file that does not exist was never taken (they are never removed): -1 then."""
        name = parse_identifier(identifier)
        if name is None:
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.private)
        except FileNotFoundError:
            return -1
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    @contextmanager
    def forking(self, task: int) -> Iterator[None]:
        """Around the fork of ``task``'s worker: the child takes the task's identifier. If no
        slot can be taken (a lock file cannot be created), it keeps prometheus_client's pid."""
        global _forking
        if task not in self.held:
            try:
                self.held[task] = self._claim(lambda slot: task_identifier(task, slot))
            except OSError:
                yield
                return
        identifier, lock = self.held[task]
        _forking = (identifier, lock)
        _master_fds.update((self.top, self.private))
        try:
            yield
        finally:
            _forking = None

    def spawned(self, pid: int, task: int) -> None:
        """Note that ``pid`` now writes under ``task``'s identifier."""
        if task in self.held:
            self.live[pid] = self.held[task][0]
        self.started[task] = time.time()

    # -- events ----------------------------------------------------------------------------

    def reaped(self, pid: int, outcome: Outcome | None) -> None:
        """A worker was reaped: its live gauges go, its counted restart is counted."""
        identifier = self.live.pop(pid, None)
        if identifier is not None:
            self._remove(live_file_names(identifier))
        if outcome is not None:
            self.started.pop(outcome.task_id, None)
            if outcome.counted:
                key = (outcome.task_id, restart_cause(outcome.exit))
                self.restarts[key] = self.restarts.get(key, 0) + 1
            self.gave_up = self.gave_up or outcome.give_up
        # Another master's workers may have died with it (killed): their live gauges go too.
        self.sweep(every=1.0)

    def sweep(self, every: float = 0.0) -> None:
        """Remove the live gauges of every identifier of this module's that no live process
        holds: workers of a previous run, of a master that was killed, of retired tasks. With
        ``every``, at most once in that many seconds."""
        now = time.monotonic()
        if every and now - self.swept < every:
            return
        self.swept = now
        try:
            names = os.listdir(self.top)
        except OSError:
            return
        # The live gauges of a pid that is gone: a --preload master's (its app's metrics
        # were created before install()), a process a worker forked.
        self._remove(dead_pid_live_files(names, pid_alive))
        mine = set(self.live.values()) | {self.master_id}
        held = {identifier for identifier, _ in self.held.values()}
        for identifier, files in live_files(names).items():
            if identifier in mine:
                continue
            if identifier in held:
                self._remove(files)
                continue
            fd = self._take_if_free(identifier)
            if fd is not None:
                # Held while the files go: a master that starts now takes another slot
                # rather than see its new worker's files removed.
                self._remove(files)
                if fd >= 0:
                    os.close(fd)

    def keep_directory(self, cfg: Any) -> bool:
        """After a reload's new config: if it names another directory (``raw_env``), name
        this one again, for the master and for the workers, which apply ``raw_env`` as they
        start. True if the config had changed it."""
        if os.environ.get(ENV_DIR) == self.path:
            return False
        os.environ[ENV_DIR] = self.path
        raw_env = [item for item in cfg.raw_env if not item.startswith(f"{ENV_DIR}=")]
        cfg.set("raw_env", [*raw_env, f"{ENV_DIR}={self.path}"])
        return True

    def publish(self, table: TaskTable) -> None:
        """Write the supervision metrics where the workers' collector reads them, when they
        changed."""
        files = {
            f"counter_{self.master_id}.db": encode(counter_samples(self.restarts)),
            f"gauge_liveall_{self.master_id}.db": encode(
                gauge_samples(table, self.options, self.gave_up, self.started)
            ),
        }
        for name, content in files.items():
            if self.published.get(name) != content:
                self._write(name, content)
                self.published[name] = content

    def close(self) -> None:
        """The master is ending: its gauges and its workers' live gauges go; counters stay,
        as a worker's do. Nothing happens in any other process."""
        if os.getpid() != self.pid:
            return
        self._remove([f"gauge_liveall_{self.master_id}.db", *live_file_names(str(self.pid))])
        for identifier, _ in self.held.values():
            self._remove(live_file_names(identifier))

    # -- files -----------------------------------------------------------------------------

    def _write(self, name: str, content: bytes) -> None:
        """Create ``name`` anew with ``content``: written in the master's subdirectory with
        O_EXCL|O_NOFOLLOW, then renamed over whatever has that name in the metrics directory."""
        temporary = f"{name}.{os.getpid()}.tmp"
        with suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=self.private)
        try:
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=self.private,
            )
            try:
                os.fchmod(fd, 0o644)  # the workers (maybe another user) read it
                os.write(fd, content)
            finally:
                os.close(fd)
            os.rename(temporary, name, src_dir_fd=self.private, dst_dir_fd=self.top)
        except OSError:
            # A full disk or a directory gone: the metrics are not worth the server.
            pass

    def _remove(self, names: Iterable[str]) -> None:
        for name in names:
            with suppress(OSError):
                os.unlink(name, dir_fd=self.top)
