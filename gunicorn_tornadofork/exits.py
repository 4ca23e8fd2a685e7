"""How a worker ended, judged from its wait status, its own report and what the arbiter did."""

from __future__ import annotations

import enum
import os
import signal
from dataclasses import dataclass, field

#: gunicorn's exit statuses for a worker that could not boot or load the app.
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4

#: Signals that, sent by the arbiter, mean "stop": shutdown, scale-down, reload. SIGKILL is
#: not one: the arbiter sends it after one of these (when ``graceful_timeout`` is due), and
#: gunicorn sends it to finish off a worker aborted for its ``timeout``.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGQUIT, signal.SIGINT})

# A worker writes one of these reports into its heartbeat file as it ends.
REPORT_FINISHED = b"F"
REPORT_RECYCLED = b"R"
_REPORT_SIGNAL = b"S"


def signal_report(signum: int) -> bytes:
    """The report of a worker that stopped because it received ``signum``."""
    return _REPORT_SIGNAL + str(int(signum)).encode("ascii")


class Ending(enum.Enum):
    """The kinds of end the arbiter tells apart (the rows of the exit table)."""

    STOPPED = "stopped"  # the arbiter asked it to stop
    RECYCLED = "recycled"  # max_requests or a code reload
    FINISHED = "finished"  # exit 0 of its own accord: the task is done
    KILLED = "killed"  # killed by a signal, or stopped by one the arbiter did not send
    FAILED = "failed"  # any other non-zero exit status
    TIMED_OUT = "timed out"  # aborted by the arbiter after `timeout`
    BOOT_FAILED = "boot failed"  # status 3: gunicorn halts
    APP_FAILED = "app failed"  # status 4: gunicorn halts

    @property
    def counted(self) -> bool:
        """Whether this end counts toward ``max_restarts``."""
        return self in _COUNTED

    @property
    def halts(self) -> bool:
        """Whether this end halts the arbiter, as plain gunicorn does."""
        return self in (Ending.BOOT_FAILED, Ending.APP_FAILED)


_COUNTED = frozenset({Ending.KILLED, Ending.FAILED, Ending.TIMED_OUT})


@dataclass(frozen=True)
class Exit:
    """A judged end: its kind, plus the signal or status that explains it."""

    ending: Ending
    signal: int | None = None
    status: int | None = None
    # The worker said it finished (finish_task()): its own word, which the exit policy leaves
    # alone, unlike a bare exit 0. Not part of equality: the judgment is the same.
    reported: bool = field(default=False, compare=False)

    def describe(self) -> str:
        """A short phrase for the log, as tornado's "killed by signal %d"."""
        if self.ending is Ending.KILLED and self.status is None:
            return f"killed by signal {signal_name(self.signal)}"
        if self.ending is Ending.KILLED:
            return f"stopped by signal {signal_name(self.signal)} that the arbiter did not send"
        if self.ending in (Ending.FAILED, Ending.BOOT_FAILED, Ending.APP_FAILED):
            return f"exited with status {self.status}"
        if self.ending is Ending.TIMED_OUT:
            return "timed out and was aborted"
        return str(self.ending.value)

    def cause(self) -> str:
        """The signal or exit status alone, as an exit policy rule matches it: for an exit 0,
        "exited with status 0" rather than "finished"."""
        if self.ending is Ending.FINISHED and not self.reported:
            return f"exited with status {self.status}"
        return self.describe()


# Looked up once: Signals(n).name goes through the enum machinery on every call.
_SIGNAL_NAMES = {member.value: member.name for member in signal.Signals}


def signal_name(signum: int | None) -> str:
    """``SIGKILL`` for 9; the bare number for a signal Python does not name."""
    name = _SIGNAL_NAMES.get(signum)  # type: ignore[arg-type]
    return str(signum) if name is None else name


def parse_report(report: bytes) -> tuple[bytes, int | None]:
    """Split a worker's report into its kind and, for a signal report, the signal."""
    report = report.rstrip(b"\0")
    if report.startswith(_REPORT_SIGNAL) and report[1:].isdigit():
        return _REPORT_SIGNAL, int(report[1:])
    if report in (REPORT_FINISHED, REPORT_RECYCLED):
        return report, None
    return b"", None


def classify(status: int, report: bytes = b"", *, requested: bool = False, aborted: bool = False) -> Exit:
    """Judge a worker's end from its wait ``status``, its ``report``, and whether the
    arbiter had asked it to stop (``requested``) or aborted it for a timeout (``aborted``).

    Precedence: statuses 3 and 4; then the worker's own finished or recycled report and a
    requested stop, which a later timeout abort does not change; then the abort; then the
    status alone.
    """
    kind, reported_signal = parse_report(report)
    code = os.waitstatus_to_exitcode(status)
    exited = code >= 0
    if exited and code == WORKER_BOOT_ERROR:
        return Exit(Ending.BOOT_FAILED, status=code)
    if exited and code == APP_LOAD_ERROR:
        return Exit(Ending.APP_FAILED, status=code)
    # USR1 (reopen the logs) is sent to every worker; one that has left its loop may be
    # past its handlers already (Python restores the defaults as it exits) and die of it.
    upkeep = code == -signal.SIGUSR1
    if kind == REPORT_FINISHED and (aborted or upkeep or code in (0, -signal.SIGTERM, -signal.SIGINT)):
        # finish_task() ends a worker through its own SIGTERM handler (uvicorn's SIGINT one
        # when the app ignores SIGTERM); some worker classes re-raise that signal once they
        # have shut down. An abort that came after the report only cut short the worker's
        # exit (a slow worker_exit).
        return Exit(Ending.FINISHED, status=0, reported=True)
    if requested:
        return Exit(Ending.STOPPED, signal=-code if code < 0 else None, status=code if exited else None)
    if kind == REPORT_RECYCLED and (aborted or upkeep):
        # The worker had left its loop for max_requests or a code reload when the abort
        # came: its drain or its worker_exit outlasted `timeout`, its loop did not hang.
        return Exit(Ending.RECYCLED, status=0)
    if aborted:
        return Exit(Ending.TIMED_OUT, signal=-code if code < 0 else None, status=code if exited else None)
    if not exited:
        return Exit(Ending.KILLED, signal=-code)
    if kind == _REPORT_SIGNAL:
        return Exit(Ending.KILLED, signal=reported_signal, status=code)
    if code != 0:
        return Exit(Ending.FAILED, status=code)
    if kind == REPORT_RECYCLED:
        return Exit(Ending.RECYCLED, status=0)
    return Exit(Ending.FINISHED, status=0)
