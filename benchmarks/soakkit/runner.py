"""One round of the soak: a server, its load, its observation, its checks."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import observe
from .load import Background, Load, Request
from .model import Contract, Model
from .plan import Round, traits
from .server import GRACEFUL_TIMEOUT, TIMEOUT, Server

POLL = 0.02
RSS_GROWTH_KIB = 8 * 1024
FD_GROWTH = 3
#: How a connection closed by its worker before it read the request fails on the client.
DROPPED = ("ConnectionResetError", "RemoteDisconnected", "BrokenPipeError")


@dataclass
class Result:
    events: int = 0
    requests: int = 0
    failed: int = 0
    explained: int = 0
    restarts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # why failed requests failed
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # the events as injected, for replay


class RoundRun:
    """Run one planned round against a fresh server and check it."""

    def __init__(
        self, rnd: Round, directory: Path, worker_class: str, *, gunicorn: str, mix: str, deadline: float
    ) -> None:
        self.round = rnd
        self.worker_class = worker_class
        self.traits = traits(worker_class)
        self.mix = mix
        self.old_gunicorn = int(gunicorn.split(".")[0]) < 24
        # gunicorn 23's gthread worker, as it stops, closes the connections it accepted but
        # has not read a request from, as uvicorn's and aiohttp's do (plain gunicorn 23 too:
        # soak.md).
        self.drops_on_stop = self.traits.drops_on_stop or (self.old_gunicorn and worker_class == "gthread")
        self.deadline = deadline  # when the soak's time is up: the finale comes next
        self.server = Server(directory, rnd, worker_class)
        opts = rnd.options
        self.t0 = time.monotonic()
        self.model = Model(
            Contract(
                workers=rnd.workers,
                offset=opts.get("task_id_offset", 0),
                max_restarts=opts["max_restarts"],
                restart_window=opts.get("restart_window"),
                max_task_restarts=opts.get("max_task_restarts"),
                backoff=opts.get("backoff", 0.0),
                backoff_max=opts.get("backoff_max", 30.0),
                recycles=rnd.max_requests > 0,
                graceful_timeout=GRACEFUL_TIMEOUT,
                timeout=TIMEOUT,
                respawn_seconds=8.0,
            ),
            self.t0,
        )
        self.result = Result()
        self.tails = {
            name: observe.Tail(directory / name) for name in ("spawns.log", "requests.log", "error.log")
        }
        self.deferred: list[observe.LogEvent] = []
        self.begins: dict[int, int] = {}  # request id -> pid
        self.end_seen: dict[int, float] = {}  # pid -> when its end line was read
        self.outcomes: dict[int, str] = {}
        self.usr1: list[tuple[int, str]] = []
        self.handled: Counter[str] = Counter()  # "hup" -> how many HUPs the master took up
        self.ignore_term = self.model.ignores_term  # pids whose app ignores SIGTERM
        self.background: list[Background] = []
        self.windows: list[tuple[float, float]] = []  # reload and scaling: (start, end)
        self.hup_at: float | None = None
        self.exit_handled = False
        self.allow_system_exit = False
        self.baseline: tuple[int, int] | None = None
        self.last_usage: tuple[int, int] | None = None
        self.load: Load | None = None

    # -- observation -----------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic()

    def violate(self, text: str, bug: str = "") -> None:
        if bug and self.mix == "safe":
            self.result.notes.append(f"[known: {bug}] {text}")
        else:
            self.model.violations.append(text + (f" [known bug: {bug}]" if bug else ""))

    def poll(self) -> None:
        """Read everything new, feed the model, sample /proc, check deadlines."""
        now = self.now()
        for line in self.tails["spawns.log"].lines():
            _, pid, task, held, at = line.split()
            self.model.spawned(int(pid), int(task), float(at), held == "ok")
        self.read_requests()
        # A worker's end line is applied one poll after it was read: by then the records of
        # that worker's start and of the requests it began (written earlier) have been read.
        for event in self.deferred:
            self.apply(event, now)
        self.deferred = [e for e in map(observe.parse_log_line, self.tails["error.log"].lines()) if e]
        if self.server.poll() is None:
            self.sample()
        elif not self.exit_handled:
            self.exit_handled = True
            for _ in range(2):  # the master's last lines
                self.poll_files_only()
            self.model.master_exited(self.server.exit_status or 0, now)
        self.model.tick(now)

    def poll_files_only(self) -> None:
        status = self.server.exit_status
        self.server.exit_status = None  # read the files without re-entering the exit branch
        try:
            for line in self.tails["spawns.log"].lines():
                _, pid, task, held, at = line.split()
                self.model.spawned(int(pid), int(task), float(at), held == "ok")
            self.read_requests()
            for event in self.deferred:
                self.apply(event, self.now())
            self.deferred = [e for e in map(observe.parse_log_line, self.tails["error.log"].lines()) if e]
        finally:
            self.server.exit_status = status

    def read_requests(self) -> None:
        for line in self.tails["requests.log"].lines():
            kind, request, pid, _task = line.split()
            if kind == "I":  # a worker took the command to ignore SIGTERM
                self.ignore_term.add(int(pid))
                continue
            self.begins[int(request)] = int(pid)
            self.model.began(int(request), int(pid))

    def apply(self, event: observe.LogEvent, now: float) -> None:
        if event.kind == "end" and event.end is not None:
            self.end_seen.setdefault(event.end.pid, now)
            self.outcomes.setdefault(event.end.pid, event.end.outcome)
            self.model.ended(event.end, now)
        elif event.kind == "finished":
            self.model.all_finished_line(event.number, now)
        elif event.kind == "usr1":
            self.usr1.append((event.number, event.text))
        elif event.kind == "handling":
            self.handled[event.text] += 1

    def sample(self) -> dict[int, list[int]]:
        """task -> live pids from /proc; a shared id is confirmed by re-reading every pid
        twice (both seen alive around the same instant) before it is a violation."""
        tasks = observe.worker_tasks(self.server.pid)
        now = self.now()
        for pid in self.model.live():
            if not observe.alive(pid):
                self.model.gone(pid, now)
        for task, pids in tasks.items():
            if len(pids) > 1 and all(observe.alive(p) for p in pids) and all(observe.alive(p) for p in pids):
                self.model.duplicate(task, pids)
        return tasks

    def wait(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Poll until ``condition`` holds or ``seconds`` pass."""
        end = self.now() + seconds
        while True:
            self.poll()
            if condition():
                return True
            if self.now() > end:
                return False
            time.sleep(POLL)

    def pause(self, seconds: float) -> None:
        self.wait(lambda: False, seconds)

    def live_ids(self) -> list[int]:
        return sorted(self.sample())

    def settle(self, what: str, seconds: float = 20.0) -> bool:
        """Wait until the ids are the model's and nothing promised is outstanding; then check
        the master's title and resources."""
        seconds += self.model.c.backoff_max if self.model.c.backoff else 0.0
        if self.model.expected_status is not None:
            return self.wait_exit(f"after {what}")
        ok = self.wait(
            lambda: (
                self.model.expected_status is not None
                or (self.model.settled(self.live_ids()) and not self.model.busy(self.now()))
            ),
            seconds,
        )
        if self.model.expected_status is not None:
            return self.wait_exit(f"after {what}")
        if self.server.exit_status is not None:
            return False
        if not ok:
            self.violate(
                f"after {what}: ids did not settle within {seconds:g}s: live {self.live_ids()}, "
                f"the model expects {sorted(self.model.expected_ids())}"
            )
            return True
        self.check_title(what)
        self.check_usage()
        return True

    def check_title(self, what: str) -> None:
        def title_ok() -> bool:
            shown = observe.master_title(self.server.pid)
            return shown is not None and self.model.title_ok(*shown, self.now())

        if self.wait(title_ok, 3.0):
            self.hup_at = None
            return
        shown = observe.master_title(self.server.pid)
        lo, hi = self.model.restarts_range(self.now())
        text = (
            f"after {what}: master title {observe.title(self.server.pid)!r}, the model expects tasks "
            f"{len(self.model.expected_ids())}/{self.model.size} restarts {lo if lo == hi else (lo, hi)}"
            f"/{self.model.c.max_restarts}"
        )
        self.violate(text, "title-after-hup" if shown is None and self.hup_at is not None else "")

    def check_usage(self) -> None:
        pid = self.server.pid
        usage = (observe.rss_kib(pid), observe.fd_count(pid) - len(observe.children(pid)))
        if self.baseline is None:
            self.baseline = usage
        self.last_usage = usage

    def wait_exit(self, what: str) -> bool:
        seconds = GRACEFUL_TIMEOUT + 12.0
        if not self.wait(lambda: self.exit_handled, seconds):
            self.violate(f"{what}: the master did not exit within {seconds:g}s ({self.model.ending})")
        return False

    # -- the round -------------------------------------------------------------------------

    def run(self) -> Result:
        from .inject import Injector

        rnd = self.round
        self.result.log.append(rnd.describe())
        self.server.start()
        try:
            if not self.wait(lambda: self.model.settled(self.live_ids()), 30.0):
                self.violate(f"the server did not start its tasks {sorted(self.model.expected_ids())}")
                return self.finish()
            self.check_title("start")
            self.check_usage()
            self.load = Load(self.server.port).start()
            injector = Injector(self)
            for event in rnd.events:
                if self.server.exit_status is not None or self.model.expected_status is not None:
                    break
                if self.now() > self.deadline:
                    self.result.log.append("(time is up: on to the finale)")
                    break
                self.pause(event.pause if event.kind != "during-reload" else 0.0)
                before = len(self.model.violations)
                note = injector.inject(event)
                self.result.events += 1
                self.result.log.append(f"{self.now() - self.t0:7.2f}s {event} {note}")
                settled = self.settle(str(event))
                self.tag(before, event.bugs)
                if not settled:
                    break
            self.load.stop()
            if self.server.exit_status is None and self.model.expected_status is None:
                note = injector.finale(rnd.finale)
                self.result.events += 1
                self.result.log.append(f"{self.now() - self.t0:7.2f}s finale {rnd.finale} {note}")
            elif self.model.expected_status is not None:
                self.wait_exit(self.model.ending)
            self.check_orphans()
        finally:
            if self.load is not None:
                self.load.stop()
        return self.finish()

    def tag(self, since: int, bugs: tuple[str, ...]) -> None:
        """Mark the violations found since ``since`` with the known bugs the event may hit."""
        if bugs:
            hint = f" [during an event that may hit known bug: {', '.join(dict.fromkeys(bugs))}]"
            self.model.violations[since:] = [v + hint for v in self.model.violations[since:]]

    def check_orphans(self) -> None:
        """No process of the server may outlive its master by more than 2 s."""
        if not self.exit_handled:
            return
        exited = self.server.exited_at or self.now()
        last_seen: dict[int, float] = {}
        end = exited + 3.0
        while self.now() < end:
            for pid in observe.session_members(self.server.pid):
                last_seen[pid] = self.now() - exited
            if not last_seen and self.now() > exited + 0.5:
                break
            time.sleep(0.05)
        alive = {pid: after for pid, after in last_seen.items() if observe.alive(pid) or after > 2.0}
        bug = "privdrop-orphans" if self.round.privdrop else ""
        before = len(self.model.violations)
        self.model.orphans(alive)
        if bug and len(self.model.violations) > before:
            self.violate(self.model.violations.pop(), bug)

    def finish(self) -> Result:
        """Stop everything, then the checks that need the whole round."""
        self.server.kill_all()  # the session's leftovers (checked above), then nothing is left
        for _ in range(2):
            self.poll_files_only()
        self.model.tick(self.now())
        self.check_requests()
        self.check_tracebacks()
        if self.baseline and self.last_usage:
            rss, fds = (b - a for a, b in zip(self.baseline, self.last_usage, strict=True))
            self.result.log.append(
                f"  master RSS {rss:+d} KiB, file descriptors {fds:+d} (settled first/last)"
            )
            if rss > RSS_GROWTH_KIB:
                self.violate(f"master RSS grew by {rss} KiB during the round")
            if fds > FD_GROWTH:
                self.violate(f"master file descriptors (beyond one per worker) grew by {fds}")
        self.result.restarts = len(self.model.counted_at)
        self.result.violations = list(self.model.violations)
        self.result.notes += self.model.notes
        return self.result

    def check_requests(self) -> None:
        """Every failed request is explained by a worker that died while serving it."""
        requests: list[Request] = self.load.take() if self.load else []
        for bg in self.background:
            bg.join(1.0)
            requests.append(bg.request)
        self.result.requests += len(requests)
        stop = self.model.stopping_at
        died = {
            pid: at
            for pid, at in self.end_seen.items()
            if self.outcomes[pid].startswith(("killed:", "exited:", "timeout")) or pid in self.ignore_term
        }
        recycled = [at for pid, at in self.end_seen.items() if self.outcomes[pid] == "recycled"]
        # A worker that finished its task stops as one asked to stop does.
        stopped = [at for pid, at in self.end_seen.items() if self.outcomes[pid] in ("stopped", "finished")]
        for r in requests:
            if not r.failed:
                continue
            self.result.failed += 1
            pid = self.begins.get(r.id)
            if stop is not None and r.end >= stop - 0.5:
                why = "server stopping"
            elif pid is not None and r.start - 1 <= self.end_seen.get(pid, -1e9) <= r.end + 10:
                why = f"its worker {self.outcomes[pid].split(':')[0]}"
            elif pid is None and any(
                r.start - 0.5 <= at <= r.end + GRACEFUL_TIMEOUT + 3 for at in died.values()
            ):
                why = "a worker died before it began"
            elif pid is None and any(r.start - 0.5 <= at <= r.end + GRACEFUL_TIMEOUT + 3 for at in recycled):
                # max_requests is outside the no-failure promise: a recycling gthread worker
                # of gunicorn 23 drops the connections it accepted but did not begin.
                why = "a worker recycled before it began"
            elif (
                pid is None
                and self.drops_on_stop
                and r.error.startswith(DROPPED)
                and any(r.start - 0.5 <= at <= r.end + GRACEFUL_TIMEOUT + 3 for at in stopped)
            ):
                # uvicorn, aiohttp and gunicorn 23's gthread close the connections they
                # accepted but have not read from as they stop: plain gunicorn fails such
                # requests in a reload too (see soak.md).
                why = "its class dropped it as a worker stopped"
            elif r.path.startswith("/exit/") and r.path.endswith("/sys"):
                why = "its app raised SystemExit"
            else:
                text = (
                    f"request {r.id} {r.path} failed ({r.error}) at {r.end - self.t0:.2f}s"
                    f"{f' on pid {pid}' if pid else ''}, unexplained by any worker's death"
                )
                in_window = any(a - 0.5 <= r.end <= b for a, b in self.windows)
                self.violate(text, "g23-reload-failures" if self.old_gunicorn and in_window else "")
                continue
            self.result.explained += 1
            self.result.reasons[why] = self.result.reasons.get(why, 0) + 1

    def check_tracebacks(self) -> None:
        """No traceback in the log, but for a ``SystemExit`` the soak itself caused (``sys.exit``
        in a request, a timeout abort) or that gunicorn's own quick-exit and abort handlers
        raise wherever the worker is (gevent prints it when that is in its thread shutdown)."""
        for name in ("error.log", "output.log"):
            lines = self.server.text(name).splitlines()
            for i, line in enumerate(lines):
                if "Traceback (most recent call last)" not in line:
                    continue
                # Workers write stderr at once: two tracebacks may interleave line by line.
                end = next(
                    (
                        j
                        for j in range(i + 1, len(lines))
                        if lines[j] and not lines[j].startswith((" ", "Traceback (most recent"))
                    ),
                    i,
                )
                block, last = lines[i:end], lines[end] if end > i else line
                if re.match(r"SystemExit\b", last) and (
                    self.allow_system_exit or any(re.search(r"in handle_(quit|abort)\b", x) for x in block)
                ):
                    continue
                if "Bad file descriptor" in last and "Socket error processing request" in lines[i - 1]:
                    # gunicorn's async workers (eventlet) closing their listener on the way out
                    # while a request is being accepted: plain gunicorn logs it too.
                    self.result.notes.append(f"gunicorn's own traceback in {name}: {lines[i - 1]} {last}")
                    continue
                if (
                    "Bad file descriptor" in last
                    and "trying to write to the signal wakeup fd" in lines[i - 1]
                    and any("_sighandler_noop" in x for x in block)
                ):
                    # asyncio's own race as its loop closes (aiohttp, uvicorn): a signal that
                    # comes after the loop closed its self-pipe and before it took back the
                    # wakeup fd is written to a closed descriptor. Python prints it and goes on.
                    self.result.notes.append(f"asyncio's own message in {name}: {lines[i - 1]} {last}")
                    continue
                self.violate(f"traceback in {name}: {last}")
