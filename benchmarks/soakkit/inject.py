"""The events, injected into a running round, each with what the contract then allows."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from .load import Background
from .model import FINISHED, RECYCLED, TIMEOUT, killed
from .plan import Event
from .server import GRACEFUL_TIMEOUT
from .server import TIMEOUT as WORKER_TIMEOUT

if TYPE_CHECKING:
    from .runner import RoundRun

END_SECONDS = GRACEFUL_TIMEOUT + 6.0
#: How long the cap finale kills workers before it takes the cap to be out of reach.
CAP_SECONDS = 40.0
SIGNAL_ORDER = {"hup": signal.SIGHUP, "kill": signal.SIGKILL, "usr1": signal.SIGUSR1, "ttin": signal.SIGTTIN}
SIGNAL_ORDER["ttou"] = signal.SIGTTOU  # a worker asked to end shows its end line by then


class Injector:
    def __init__(self, run: RoundRun) -> None:
        self.run = run
        self.model = run.model
        self.server = run.server
        self.slow = 2.5 if "tornado" in run.worker_class else 0.0  # tornado checks once a second

    # -- targets ---------------------------------------------------------------------------

    def target(self, pick: int, *, any_live: bool = False, avoid: set[int] | None = None) -> int | None:
        """A live worker (in range), by rank: one with nothing pending, or any."""
        if any_live:
            choices = {w.task: pid for pid, w in self.model.live().items() if w.task in self.model.ids()}
        else:
            choices = self.model.running()
        live = {pid for pids in self.run.sample().values() for pid in pids}
        pids = [
            choices[t] for t in sorted(choices) if choices[t] in live and choices[t] not in (avoid or set())
        ]
        return pids[pick % len(pids)] if pids else None

    def signal_outcomes(self, name: str) -> frozenset[str]:
        names = {name}
        if name == "SIGINT" and self.run.traits.asgi:
            names.add("SIGQUIT")  # gunicorn's asgi worker stops on SIGINT through handle_quit
        if name in ("SIGINT", "SIGQUIT"):
            # gunicorn's quick-exit handler raises SystemExit wherever the worker is; a sync
            # worker hit mid-request can hang until it is aborted for timeout (also counted).
            return killed(*names) | {TIMEOUT}
        return killed(*names)

    def kill(self, pick: int, name: str, any_live: bool = False) -> str:
        avoid = self.run.ignore_term if name == "SIGTERM" else None
        pid = self.target(pick, any_live=any_live, avoid=avoid)
        if pid is None:
            return "skipped: no target"
        task = self.model.workers[pid].task
        deadline = self.run.now() + END_SECONDS + self.slow
        if not self.send(pid, signal.Signals[name], self.signal_outcomes(name), deadline, f"{name} sent"):
            return f"skipped: task {task} pid {pid} was already reaped"
        return f"task {task} pid {pid}"

    def send(
        self, pid: int, sig: signal.Signals, outcomes: frozenset[str], deadline: float, why: str
    ) -> bool:
        """Signal worker ``pid``, expecting one of ``outcomes``; False (and nothing expected)
        when the master reaped it before the soak read that it ended."""
        expected = self.model.expect(pid, outcomes, deadline, why)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            if expected:
                self.model.unexpect(pid)
            return False
        return True

    def request(self, path: str, outcomes: frozenset[str] | None, seconds: float | None, why: str) -> str:
        """Send ``path`` in the background; the worker that begins it must end in ``outcomes``
        within ``seconds`` after now (None: it may also live on)."""
        bg = Background(self.server.port, path, WORKER_TIMEOUT * 4 + 10)
        self.run.background.append(bg)
        if outcomes is not None:
            deadline = None if seconds is None else self.run.now() + seconds + self.slow
            self.model.expect_request(bg.id, outcomes, deadline, why)
        self.began(bg)
        pid = self.run.begins.get(bg.id)
        if pid is None:
            return "request not begun" + (f" ({bg.request.error})" if bg.finished() else "")
        task = self.model.workers[pid].task if pid in self.model.workers else "?"
        return f"task {task} pid {pid}"

    def began(self, bg: Background) -> None:
        """Wait until the request's record shows which worker began it (or it ended)."""
        self.run.wait(lambda: bg.id in self.run.begins or bg.finished(), 5.0)
        self.run.poll()  # the record is written before the answer: read it once more

    # -- events ----------------------------------------------------------------------------

    def inject(self, event: Event) -> str:
        kind, arg, pick = event.kind, event.arg, event.pick
        if kind == "kill-idle":
            return self.kill(pick, arg)
        if kind == "kill-busy":
            bg = Background(self.server.port, "/sleep/2", 20)
            self.run.background.append(bg)
            self.began(bg)
            pid = self.run.begins.get(bg.id)
            if pid is None or pid not in self.model.running().values():
                return "skipped: busy worker not available"
            if arg == "SIGTERM" and pid in self.run.ignore_term:
                return "skipped: the busy worker ignores SIGTERM"
            deadline = self.run.now() + END_SECONDS + 2
            why = f"{arg} sent mid-request"
            if not self.send(pid, signal.Signals[arg], self.signal_outcomes(arg), deadline, why):
                return f"skipped: pid {pid} was already reaped"
            return f"task {self.model.workers[pid].task} pid {pid}"
        if kind == "exit":
            status, how = arg.split("/")
            outcome = FINISHED if status == "0" else f"exited:{status}"
            if how == "sys":
                # A worker class may swallow SystemExit raised in a request (gunicorn's
                # sync worker answers 500): then the worker lives on.
                self.run.allow_system_exit = True
                return self.request(f"/exit/{arg}", frozenset({outcome}), None, f"sys.exit({status})")
            return self.request(f"/exit/{arg}", frozenset({outcome}), 5.0, f"os._exit({status})")
        if kind == "finish":
            return self.request("/finish", frozenset({FINISHED}), END_SECONDS, "finish_task()")
        if kind == "hang":
            self.run.allow_system_exit = True  # the abort raises SystemExit in the request
            return self.request(
                f"/block/{WORKER_TIMEOUT * 3}", frozenset({TIMEOUT}), WORKER_TIMEOUT * 2 + 6, "hang"
            )
        if kind == "recycle":
            return self.request("/recycle", frozenset({RECYCLED}), END_SECONDS, "alive cleared")
        if kind == "slowexit":
            outcome = FINISHED if arg == "finish" else RECYCLED
            path = f"/slowexit/{WORKER_TIMEOUT + 3}/{arg}"
            return self.request(
                path, frozenset({outcome}), END_SECONDS + WORKER_TIMEOUT + 3, f"slow worker_exit, {arg}"
            )
        if kind == "ignoreterm":
            note = self.request("/ignoreterm", None, None, "")
            bg = self.run.background[-1]
            self.run.wait(bg.finished, 5.0)
            pid = self.run.begins.get(bg.id)
            if pid is not None and bg.request.status == 200:
                self.run.ignore_term.add(pid)
                return note
            return f"{note}: not taken ({bg.request.status})"
        if kind == "linger":
            return self.linger(pick)
        if kind == "readd":
            return self.readd()
        if kind == "alarm":
            return self.request(f"/alarm/{arg}", killed("SIGALRM"), int(arg) + 5.0, "signal.alarm()")
        if kind == "pair":
            # Pending signals reach the master lowest number first, whatever order they were
            # sent in: send them in that order, so that the model takes them in that order too.
            a, b = sorted(arg.split("+"), key=lambda kind: SIGNAL_ORDER[kind])
            return f"{self.simple(a, pick, any_live=True)}; {self.simple(b, pick + 1, any_live=True)}"
        if kind == "during-reload":
            first = self.simple("hup", pick)
            self.run.pause(event.pause)
            return f"{first}; after {event.pause}s {self.simple(arg, pick, any_live=True)}"
        return self.simple(kind, pick, arg)

    def linger(self, pick: int) -> str:
        """The top task's worker ignores SIGTERM; TTOU retires it (it lingers until it is
        killed after graceful_timeout); meanwhile another task's worker is killed: it must be
        replaced after its backoff, not once the retired worker is gone."""
        running = self.model.running()
        if self.model.size < 2 or self.model.c.offset + self.model.size - 1 not in running:
            return "skipped: the top task has no running worker"
        top = self.model.c.offset + self.model.size - 1
        pid = running[top]
        command = self.server.dir / "cmd" / str(top)
        # Put in place whole: a worker may take the command the instant it appears.
        pending = command.with_name(f".{top}.pending")
        pending.write_text("ignoreterm")
        os.chmod(pending, 0o666)
        os.replace(pending, command)
        if not self.run.wait(lambda: pid in self.run.ignore_term, 5.0):
            command.unlink(missing_ok=True)
            return f"skipped: task {top} pid {pid} did not take the command"
        note = self.simple("ttou", pick)
        victim = self.target(pick, avoid={pid})
        if victim is None:
            return f"task {top} pid {pid} ignores SIGTERM; {note}; no other worker to kill"
        return f"task {top} pid {pid} ignores SIGTERM; {note}; SIGKILL {self.kill(pick, 'SIGKILL')}"

    def readd(self) -> str:
        """The top task fails, is retired (TTOU), comes back (TTIN) and fails again: it came
        back as a new task, so its restart count and backoff start afresh."""
        top = self.model.c.offset + self.model.size - 1
        notes: list[str] = []
        for step in ("kill", "ttou", "ttin", "kill"):
            if step == "kill":
                pid = self.model.running().get(top)
                if pid is None:
                    return "; ".join([*notes, f"task {top} has no running worker"])
                deadline = self.run.now() + END_SECONDS
                if not self.send(pid, signal.SIGKILL, killed("SIGKILL"), deadline, "SIGKILL sent"):
                    return "; ".join([*notes, f"task {top} pid {pid} was already reaped"])
                notes.append(f"SIGKILL task {top} pid {pid}")
            else:
                notes.append(self.simple(step, 0))
            if not self.run.settle(f"readd: {step}"):
                break
        return "; ".join(notes)

    def simple(self, kind: str, pick: int, arg: str = "", any_live: bool = False) -> str:
        now = self.run.now()
        if kind == "kill":
            return "SIGKILL " + self.kill(pick, "SIGKILL", any_live)
        if kind == "hup":
            if arg:
                self.server.set_workers(int(arg))
            size = int(self.server.workers_file.read_text())
            self.model.reload(size, now)
            self.run.windows.append((now, self.model.reload_until))
            self.run.hup_at = now
            self.master_signal(signal.SIGHUP, any_live)
            return f"HUP (workers {size})"
        if kind == "ttin":
            self.model.scale(self.model.size + 1, now, "TTIN")
            self.run.windows.append((now, now + END_SECONDS))
            self.master_signal(signal.SIGTTIN, any_live)
            return f"TTIN (tasks {self.model.size})"
        if kind == "ttou":
            if self.model.size > 1:
                self.model.scale(self.model.size - 1, now, "TTOU")
            self.run.windows.append((now, now + END_SECONDS))
            self.master_signal(signal.SIGTTOU, any_live)
            return f"TTOU (tasks {self.model.size})"
        if kind == "usr1":
            self.model.usr1_sent(now)
            if any_live:  # one of two signals at once: its lines are not waited for
                self.server.signal(signal.SIGUSR1)
                return "USR1"
            return self.usr1()
        raise ValueError(kind)

    def master_signal(self, sig: signal.Signals, together: bool) -> None:
        """Send ``sig`` to the master; unless it goes with another one on purpose, wait until
        the master takes it up: two pending signals reach it lowest number first, so a TTOU
        followed too closely by a TTIN would be taken the other way round on a busy machine."""
        name = sig.name[3:].lower()
        before = self.run.handled[name]
        self.server.signal(sig)
        if not together:
            self.run.wait(lambda: self.run.handled[name] > before, 10.0)

    def usr1(self) -> str:
        """USR1: logs reopened, no worker replaced, one line per task."""
        self.run.usr1.clear()
        self.server.signal(signal.SIGUSR1)
        sizes = self.model.sizes(self.run.now())
        if not self.run.wait(lambda: len(self.run.usr1) >= min(sizes), 5.0):
            self.run.violate(f"USR1: {len(self.run.usr1)} task lines logged, {sorted(sizes)} tasks")
            return "USR1"
        self.run.pause(0.2)
        if len(self.run.usr1) not in sizes:
            self.run.violate(f"USR1: {len(self.run.usr1)} task lines logged, {sorted(sizes)} tasks")
        for task, text in self.run.usr1:
            state = self.model.tasks.get(task)
            if state is None:
                if not self.model.c.offset <= task < self.model.c.offset + max(sizes):
                    self.run.violate(f"USR1 listed task {task}, outside the model's ids")
            elif state.finished != (text == "finished"):
                self.run.violate(f"USR1 says 'task {task}: {text}', the model has finished={state.finished}")
        return "USR1"

    # -- finales ---------------------------------------------------------------------------

    def finale(self, kind: str) -> str:
        run = self.run
        now = run.now()
        if kind == "term":
            self.model.shutdown(now)
            self.server.signal(signal.SIGTERM)
        elif kind == "int-group":
            self.model.shutdown(now)
            self.server.signal_group(signal.SIGINT)
        elif kind == "kill-master":
            self.model.master_killed(now, -signal.SIGKILL)
            self.server.signal(signal.SIGKILL)
        elif kind == "cap":
            kills = 0
            end = now + CAP_SECONDS
            while (
                self.model.expected_status is None
                and kills < 200
                and run.server.exit_status is None
                and run.now() < end
            ):
                pid = self.target(kills)
                if pid is None:
                    run.wait(
                        lambda: bool(self.model.running()) or self.model.expected_status is not None, 10.0
                    )
                    if not self.model.running():
                        break
                    continue
                self.kill(kills, "SIGKILL")
                kills += 1
                run.wait(lambda p=pid: p in run.end_seen, END_SECONDS)  # type: ignore[misc]
            note = f"{kills} kills"
            if self.model.expected_status is None and run.server.exit_status is None:
                # A restart_window that forgets restarts as fast as a backoff lets them
                # happen keeps the cap out of reach: the server rightly runs on.
                self.model.shutdown(run.now())
                self.server.signal(signal.SIGTERM)
                run.wait_exit("SIGTERM")
                return f"{note}; the cap out of reach: SIGTERM"
            run.wait_exit("giving up")
            return note
        elif kind == "finish-all":
            sent = 0
            while not self.model.all_finished() and sent < 4 * self.model.size + 10:
                if self.model.expected_status is not None or run.server.exit_status is not None:
                    break
                before = len([t for t in self.model.tasks.values() if t.finished])
                self.request("/finish", frozenset({FINISHED}), END_SECONDS, "finish_task()")
                sent += 1
                run.wait(
                    lambda b=before: len([t for t in self.model.tasks.values() if t.finished]) > b,  # type: ignore[misc]
                    END_SECONDS,
                )
            if not self.model.all_finished() and self.model.expected_status is None:
                self.model.shutdown(run.now())
                self.server.signal(signal.SIGTERM)
                run.wait_exit("SIGTERM")
                return f"{sent} finish requests; SIGTERM"
            run.wait_exit("every task finished")
            return f"{sent} finish requests"
        run.wait_exit(kind)
        return ""
