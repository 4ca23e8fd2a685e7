"""Looking at a server from outside: /proc, and the files its master and workers append to."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .model import FINISHED, RECYCLED, STOPPED, TIMEOUT, EndLine

_END = re.compile(r"\btask (\d+) \(pid (\d+)\) (.*)$")
_COUNT = re.compile(r", restarting(?: in ([0-9.e+-]+)s)? \((\d+) of max_restarts (\d+)\)$")
_GIVE_UP = re.compile(r"; Too many child restarts, giving up \((.*)\)$")
_GIVE_UP_TOTAL = re.compile(r"^(\d+) restarts > max_restarts \d+$")
_GIVE_UP_TASK = re.compile(r"^task \d+: (\d+) restarts > max_task_restarts \d+$")
_ALL_FINISHED = re.compile(r"\bAll (\d+) tasks finished\b")
_TITLE = re.compile(r"tasks (\d+)/(\d+) restarts (\d+)/(\d+)")
_USR1 = re.compile(r"\] task (\d+): (.*)$")
_HANDLING = re.compile(r"\] Handling signal: (\w+)$")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return stat.rsplit(")", 1)[1].split() if stat else None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def title(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def children(pid: int) -> list[int]:
    """``pid``'s children, from every thread's ``children`` file."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        found += [int(p) for p in _read(f"/proc/{pid}/task/{tid}/children").split()]
    return found


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the server runs in a session of its own)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(int(name))
            if fields is not None and fields[0] != "Z" and fields[3] == str(sid):
                members.append(int(name))
    return members


def worker_tasks(master: int) -> dict[int, list[int]]:
    """task id -> live worker pids of ``master``, from their /proc titles."""
    found: dict[int, list[int]] = {}
    for pid in children(master):
        name = title(pid)
        if "worker [" in name and " task " in name and alive(pid):
            tail = name.rsplit(" task ", 1)[1]
            if tail.isdigit():
                found.setdefault(int(tail), []).append(pid)
    return found


def master_title(master: int) -> tuple[int, int, int, int] | None:
    """(live, tasks, restarts, max_restarts) from the master's title, or None."""
    match = _TITLE.search(title(master))
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]), int(match[4]))


def rss_kib(pid: int) -> int:
    for line in _read(f"/proc/{pid}/status").decode().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Tail:
    """New complete lines of a file that others append to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.rest = (self.rest + data).split(b"\n")
        return [line.decode(errors="replace") for line in lines]


@dataclass(frozen=True)
class LogEvent:
    kind: str  # "end", "finished", "usr1", "handling", "traceback"
    end: EndLine | None = None
    number: int = 0
    text: str = ""


def outcome_of(phrase: str) -> str | None:
    """The model's outcome for the arbiter's description of an end."""
    if m := re.match(r"killed by signal (\w+)", phrase):
        return f"killed:{m[1]}"
    if m := re.match(r"stopped by signal (\w+) that the arbiter did not send", phrase):
        return f"killed:{m[1]}"
    if m := re.match(r"exited with status (-?\d+)", phrase):
        return f"exited:{m[1]}"
    if phrase.startswith("timed out and was aborted"):
        return TIMEOUT
    for word in (STOPPED, RECYCLED, FINISHED):
        if phrase.startswith(word):
            return word
    return None


def parse_log_line(line: str) -> LogEvent | None:
    """The arbiter's line about a worker's end, all tasks finished, a USR1 task line, a
    signal it takes up, or a traceback; None for anything else."""
    if "Traceback (most recent call last)" in line:
        return LogEvent("traceback", text=line)
    if m := _HANDLING.search(line):
        return LogEvent("handling", text=m[1])
    if m := _ALL_FINISHED.search(line):
        return LogEvent("finished", number=int(m[1]))
    if m := _USR1.search(line):
        return LogEvent("usr1", number=int(m[1]), text=m[2])
    m = _END.search(line)
    if m is None:
        return None
    task, pid, rest = int(m[1]), int(m[2]), m[3]
    give_up = _GIVE_UP.search(rest)
    phrase = rest[: give_up.start()] if give_up else rest
    count_m = _COUNT.search(phrase)
    if count_m:
        phrase = phrase[: count_m.start()]
    outcome = outcome_of(phrase)
    if outcome is None:
        return None
    total = task_count = None
    if give_up:
        if g := _GIVE_UP_TOTAL.match(give_up[1]):
            total = int(g[1])
        if g := _GIVE_UP_TASK.match(give_up[1]):
            task_count = int(g[1])
    end = EndLine(
        task,
        pid,
        outcome,
        count=int(count_m[2]) if count_m else None,
        delay=float(count_m[1]) if count_m and count_m[1] else 0.0,
        gave_up=give_up is not None,
        give_up_count=total,
        give_up_task_count=task_count,
    )
    return LogEvent("end", end=end)
