"""How a worker's end is judged: every row of the exit table through ``classify()``."""

from __future__ import annotations

import os
import signal

import pytest

from gunicorn_tornadofork.exits import (
    APP_LOAD_ERROR,
    REPORT_FINISHED,
    REPORT_RECYCLED,
    STOP_SIGNALS,
    WORKER_BOOT_ERROR,
    Ending,
    Exit,
    classify,
    parse_report,
    signal_name,
    signal_report,
)

pytestmark = pytest.mark.compat

REPORT_SIZE = 8  # what a worker writes: its report, NUL-padded


def exited(code: int) -> int:
    """The wait status of a process that exited with ``code``."""
    return code << 8


def killed(signum: int, core: bool = False) -> int:
    """The wait status of a process killed by ``signum`` (optionally dumping core)."""
    return int(signum) | (0x80 if core else 0)


def padded(report: bytes) -> bytes:
    """A report as the arbiter reads it from the heartbeat file."""
    return report.ljust(REPORT_SIZE, b"\0")


def test_status_helpers_are_real_wait_statuses() -> None:
    """The statuses built here decode as the kernel's do."""
    assert os.waitstatus_to_exitcode(exited(0)) == 0
    assert os.waitstatus_to_exitcode(exited(255)) == 255
    assert os.waitstatus_to_exitcode(killed(signal.SIGKILL)) == -signal.SIGKILL
    assert os.waitstatus_to_exitcode(killed(signal.SIGSEGV, core=True)) == -signal.SIGSEGV


# -- the arbiter asked it to stop -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "report", "expected"),
    [
        (exited(0), b"", Exit(Ending.STOPPED, status=0)),
        (exited(0), padded(REPORT_RECYCLED), Exit(Ending.STOPPED, status=0)),
        (exited(0), padded(signal_report(signal.SIGTERM)), Exit(Ending.STOPPED, status=0)),
        (exited(0), padded(signal_report(signal.SIGQUIT)), Exit(Ending.STOPPED, status=0)),
        (exited(1), b"", Exit(Ending.STOPPED, status=1)),
        (killed(signal.SIGTERM), b"", Exit(Ending.STOPPED, signal=signal.SIGTERM)),
        (killed(signal.SIGKILL), b"", Exit(Ending.STOPPED, signal=signal.SIGKILL)),
        (killed(signal.SIGSEGV, core=True), b"", Exit(Ending.STOPPED, signal=signal.SIGSEGV)),
    ],
)
def test_requested_stop_is_stopped(status: int, report: bytes, expected: Exit) -> None:
    """Whatever the status, a worker the arbiter asked to stop is STOPPED: neither
    replaced as a failure nor counted."""
    result = classify(status, report, requested=True)
    assert result == expected
    assert not result.ending.counted
    assert not result.ending.halts


def test_stop_signals_are_the_arbiters() -> None:
    """The signals by which the arbiter stops workers (shutdown, scale-down, reload) are the
    ones that mark a stop request. Neither the timeout abort nor SIGKILL is one: SIGKILL
    follows a stop signal when ``graceful_timeout`` is due, and finishes off an aborted
    worker, whose timeout it must not turn into a requested stop."""
    assert {signal.SIGTERM, signal.SIGQUIT, signal.SIGINT} == STOP_SIGNALS
    assert signal.SIGKILL not in STOP_SIGNALS
    assert signal.SIGABRT not in STOP_SIGNALS
    assert signal.SIGHUP not in STOP_SIGNALS


# -- recycled ---------------------------------------------------------------------------


@pytest.mark.parametrize("report", [REPORT_RECYCLED, padded(REPORT_RECYCLED)])
def test_recycled(report: bytes) -> None:
    """Exit 0 with the recycled report (max_requests, code reload): replaced, not counted."""
    result = classify(exited(0), report)
    assert result == Exit(Ending.RECYCLED, status=0)
    assert not result.ending.counted


def test_recycled_report_with_failure_status_is_a_failure() -> None:
    """The recycled report does not excuse a non-zero exit status."""
    assert classify(exited(1), padded(REPORT_RECYCLED)) == Exit(Ending.FAILED, status=1)


def test_recycled_report_with_signal_death_is_killed() -> None:
    """The recycled report does not excuse a death by signal."""
    assert classify(killed(signal.SIGKILL), padded(REPORT_RECYCLED)) == Exit(
        Ending.KILLED, signal=signal.SIGKILL
    )


@pytest.mark.parametrize(
    ("report", "ending"), [(REPORT_RECYCLED, Ending.RECYCLED), (REPORT_FINISHED, Ending.FINISHED)]
)
def test_report_wins_over_a_late_sigusr1(report: bytes, ending: Ending) -> None:
    """The arbiter's USR1 (reopen the logs) can reach a worker that has left its loop and is
    past its handlers: the worker's own report decides, nothing is counted."""
    result = classify(killed(signal.SIGUSR1), padded(report))
    assert result.ending is ending
    assert not result.ending.counted


def test_sigusr1_death_without_a_report_is_killed() -> None:
    """Without a report, a death by SIGUSR1 is a death by a signal: counted."""
    assert classify(killed(signal.SIGUSR1)) == Exit(Ending.KILLED, signal=signal.SIGUSR1)


# -- finished ---------------------------------------------------------------------------


@pytest.mark.parametrize("report", [b"", REPORT_FINISHED, padded(REPORT_FINISHED)])
def test_exit_zero_of_its_own_accord_is_finished(report: bytes) -> None:
    """Exit 0 without a request, with no report or the finished one: the task is done."""
    result = classify(exited(0), report)
    assert result == Exit(Ending.FINISHED, status=0)
    assert not result.ending.counted
    assert not result.ending.halts


def test_finished_report_with_sigterm_death_is_finished() -> None:
    """finish_task() stops the worker through its SIGTERM handler; a worker class that
    re-raises SIGTERM after its shutdown still finished its task."""
    assert classify(killed(signal.SIGTERM), padded(REPORT_FINISHED)) == Exit(Ending.FINISHED, status=0)


@pytest.mark.parametrize("requested", [False, True])
def test_finished_report_wins_over_a_stop_request(requested: bool) -> None:
    """A worker that finished its task is finished even if the arbiter also asked it to stop."""
    assert classify(exited(0), padded(REPORT_FINISHED), requested=requested).ending is Ending.FINISHED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (killed(signal.SIGKILL), Exit(Ending.KILLED, signal=signal.SIGKILL)),
        (killed(signal.SIGSEGV), Exit(Ending.KILLED, signal=signal.SIGSEGV)),
        (exited(1), Exit(Ending.FAILED, status=1)),
    ],
)
def test_finished_report_does_not_excuse_other_deaths(status: int, expected: Exit) -> None:
    """The finished report covers exit 0 and SIGTERM only: any other death still counts."""
    result = classify(status, padded(REPORT_FINISHED))
    assert result == expected
    assert result.ending.counted


# -- killed by a signal, or stopped by a signal the arbiter did not send -----------------


@pytest.mark.parametrize(
    "signum", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM, signal.SIGABRT, signal.SIGQUIT, signal.SIGINT]
)
@pytest.mark.parametrize("core", [False, True])
def test_death_by_signal_is_killed(signum: int, core: bool) -> None:
    """A worker killed by a signal the arbiter did not send: KILLED, counted, with the signal."""
    result = classify(killed(signum, core))
    assert result == Exit(Ending.KILLED, signal=signum)
    assert result.ending.counted
    assert not result.ending.halts


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGABRT])
@pytest.mark.parametrize("code", [0, 1])
def test_signal_report_is_killed(signum: int, code: int) -> None:
    """A worker that caught a stop signal nobody in the arbiter sent and exited cleanly:
    KILLED, counted, with the reported signal and the exit status."""
    result = classify(exited(code), padded(signal_report(signum)))
    assert result == Exit(Ending.KILLED, signal=signum, status=code)
    assert result.ending.counted


def test_signal_report_without_padding() -> None:
    """The report parses with or without its NUL padding."""
    assert classify(exited(0), signal_report(signal.SIGTERM)) == Exit(
        Ending.KILLED, signal=signal.SIGTERM, status=0
    )


# -- any other non-zero exit status ------------------------------------------------------


@pytest.mark.parametrize("code", [1, 2, 5, 70, 127, 255])
@pytest.mark.parametrize("report", [b"", padded(REPORT_RECYCLED), b"garbage!"])
def test_other_nonzero_status_is_failed(code: int, report: bytes) -> None:
    """Any other non-zero exit status: FAILED, counted, with the status."""
    result = classify(exited(code), report)
    assert result == Exit(Ending.FAILED, status=code)
    assert result.ending.counted
    assert not result.ending.halts


# -- timeouts (the arbiter aborted it) ---------------------------------------------------


# How an aborted worker can end: its SIGABRT handler's sys.exit(1) (gunicorn 23), exit 0
# (gunicorn 27's sync worker swallows that SystemExit in its request handler), death by
# SIGABRT (a class without a handler, or one already removed), or the SIGKILL that gunicorn
# sends on its next pass to a worker still there.
ABORT_STATUSES = [exited(1), exited(0), killed(signal.SIGABRT, core=True), killed(signal.SIGKILL)]


def abort_exit(status: int) -> Exit:
    """The TIMED_OUT end of a worker aborted with wait ``status``, with its signal or status."""
    code = os.waitstatus_to_exitcode(status)
    return Exit(Ending.TIMED_OUT, signal=-code) if code < 0 else Exit(Ending.TIMED_OUT, status=code)


@pytest.mark.parametrize("status", ABORT_STATUSES)
@pytest.mark.parametrize("report", [b"", padded(signal_report(signal.SIGABRT)), b"garbage!"])
def test_aborted_in_its_loop_is_timed_out(status: int, report: bytes) -> None:
    """A worker aborted for a timeout while still in its loop (no report, or the report of
    its SIGABRT handler) is TIMED_OUT and counted, whatever its status says."""
    result = classify(status, report, aborted=True)
    assert result == abort_exit(status)
    assert result.ending.counted


@pytest.mark.parametrize("status", ABORT_STATUSES)
def test_finished_then_aborted_is_finished(status: int) -> None:
    """A worker that had finished its task (finish_task() reports at once) and was aborted
    afterwards, in a slow worker_exit, finished: not replaced, not counted."""
    result = classify(status, padded(REPORT_FINISHED), aborted=True)
    assert result == Exit(Ending.FINISHED, status=0)
    assert not result.ending.counted


@pytest.mark.parametrize("status", ABORT_STATUSES)
def test_recycled_then_aborted_is_recycled(status: int) -> None:
    """A worker that had left its loop for max_requests or a code reload and was aborted
    during its drain or its worker_exit recycled: replaced, not counted."""
    result = classify(status, padded(REPORT_RECYCLED), aborted=True)
    assert result == Exit(Ending.RECYCLED, status=0)
    assert not result.ending.counted


@pytest.mark.parametrize("status", ABORT_STATUSES)
@pytest.mark.parametrize(
    "report", [b"", padded(REPORT_RECYCLED), padded(signal_report(signal.SIGTERM)), padded(signal_report(6))]
)
def test_requested_then_aborted_is_stopped(status: int, report: bytes) -> None:
    """A worker the arbiter asked to stop (scale-down, reload, shutdown) and then aborted
    for its timeout (a slow worker_exit) is STOPPED, not counted."""
    code = os.waitstatus_to_exitcode(status)
    result = classify(status, report, requested=True, aborted=True)
    assert result == Exit(
        Ending.STOPPED, signal=-code if code < 0 else None, status=code if code >= 0 else None
    )
    assert not result.ending.counted


@pytest.mark.parametrize("status", ABORT_STATUSES)
def test_finished_beats_requested_and_aborted(status: int) -> None:
    """A finished report beats both a stop request and an abort."""
    assert classify(status, padded(REPORT_FINISHED), requested=True, aborted=True).ending is Ending.FINISHED


def test_stray_signal_then_aborted_is_timed_out() -> None:
    """A stop signal nobody in the arbiter sent, then an abort: still counted (a timeout)."""
    result = classify(exited(1), padded(signal_report(signal.SIGTERM)), aborted=True)
    assert result == Exit(Ending.TIMED_OUT, status=1)
    assert result.ending.counted


# -- statuses 3 and 4: gunicorn halts ---------------------------------------------------


@pytest.mark.parametrize(
    ("code", "ending"), [(WORKER_BOOT_ERROR, Ending.BOOT_FAILED), (APP_LOAD_ERROR, Ending.APP_FAILED)]
)
@pytest.mark.parametrize("report", [b"", padded(REPORT_FINISHED), padded(signal_report(signal.SIGTERM))])
@pytest.mark.parametrize(("requested", "aborted"), [(False, False), (True, False), (False, True)])
def test_boot_and_load_errors_halt(
    code: int, ending: Ending, report: bytes, requested: bool, aborted: bool
) -> None:
    """Exit status 3 (worker failed to boot) and 4 (app failed to load) halt the arbiter,
    whatever else is known about the worker."""
    result = classify(exited(code), report, requested=requested, aborted=aborted)
    assert result == Exit(ending, status=code)
    assert result.ending.halts
    assert not result.ending.counted


@pytest.mark.parametrize("signum", [3, 4])  # SIGQUIT, SIGILL: the same numbers as signals
def test_signals_3_and_4_do_not_halt(signum: int) -> None:
    """A death by signal 3 or 4 is not the exit status 3 or 4 that halts."""
    result = classify(killed(signum))
    assert result == Exit(Ending.KILLED, signal=signum)
    assert not result.ending.halts


# -- reports ----------------------------------------------------------------------------


def test_report_bytes() -> None:
    """The reports fit the worker's 8-byte slot, and signal reports carry the number."""
    assert signal_report(signal.SIGTERM) == b"S15"
    assert signal_report(9) == b"S9"
    assert signal_report(64) == b"S64"
    for report in (REPORT_FINISHED, REPORT_RECYCLED, signal_report(64)):
        assert len(report) <= REPORT_SIZE


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (b"", (b"", None)),
        (REPORT_FINISHED, (REPORT_FINISHED, None)),
        (padded(REPORT_FINISHED), (REPORT_FINISHED, None)),
        (padded(REPORT_RECYCLED), (REPORT_RECYCLED, None)),
        (padded(signal_report(15)), (b"S", 15)),
        (signal_report(2), (b"S", 2)),
    ],
)
def test_parse_report(report: bytes, expected: tuple[bytes, int | None]) -> None:
    """Reports parse with or without NUL padding."""
    assert parse_report(report) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        b"\0" * REPORT_SIZE,
        b"X",
        b"S",
        b"Sx",
        b"S-1",
        b"S 15",
        b"FF",
        b"f",
        b"F\0\0junk",
        b"\0F",
        b"RF",
        b"\xff\xfe\x00\x01",
    ],
)
def test_garbage_report_is_no_report(garbage: bytes) -> None:
    """Anything but a well-formed report is ignored: the exit status alone decides."""
    assert parse_report(garbage) == (b"", None)
    assert classify(exited(0), garbage) == Exit(Ending.FINISHED, status=0)
    assert classify(exited(1), garbage) == Exit(Ending.FAILED, status=1)
    assert classify(killed(signal.SIGTERM), garbage) == Exit(Ending.KILLED, signal=signal.SIGTERM)


# -- the endings ------------------------------------------------------------------------


def test_counted_endings() -> None:
    """Exactly the killed, failed and timed-out ends count toward max_restarts."""
    assert {e for e in Ending if e.counted} == {Ending.KILLED, Ending.FAILED, Ending.TIMED_OUT}


def test_halting_endings() -> None:
    """Exactly the boot and app-load failures halt the arbiter."""
    assert {e for e in Ending if e.halts} == {Ending.BOOT_FAILED, Ending.APP_FAILED}


def test_no_ending_both_counts_and_halts() -> None:
    """A halting end is never also a counted restart."""
    assert not [e for e in Ending if e.counted and e.halts]


# -- log texts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit", "text"),
    [
        (Exit(Ending.KILLED, signal=signal.SIGKILL), "killed by signal SIGKILL"),
        (Exit(Ending.KILLED, signal=signal.SIGSEGV), "killed by signal SIGSEGV"),
        (
            Exit(Ending.KILLED, signal=signal.SIGTERM, status=0),
            "stopped by signal SIGTERM that the arbiter did not send",
        ),
        (Exit(Ending.FAILED, status=1), "exited with status 1"),
        (Exit(Ending.FAILED, status=255), "exited with status 255"),
        (Exit(Ending.BOOT_FAILED, status=3), "exited with status 3"),
        (Exit(Ending.APP_FAILED, status=4), "exited with status 4"),
        (Exit(Ending.TIMED_OUT, status=1), "timed out and was aborted"),
        (Exit(Ending.TIMED_OUT, signal=signal.SIGKILL), "timed out and was aborted"),
        (Exit(Ending.STOPPED, status=0), "stopped"),
        (Exit(Ending.RECYCLED, status=0), "recycled"),
        (Exit(Ending.FINISHED, status=0), "finished"),
    ],
)
def test_describe(exit: Exit, text: str) -> None:
    """The phrase each end gets in the arbiter's log."""
    assert exit.describe() == text


def test_describe_of_classified_ends() -> None:
    """The log phrase names the signal or status that classify() found."""
    assert classify(killed(signal.SIGKILL)).describe() == "killed by signal SIGKILL"
    assert classify(exited(0), signal_report(signal.SIGINT)).describe() == (
        "stopped by signal SIGINT that the arbiter did not send"
    )
    assert classify(exited(7)).describe() == "exited with status 7"


@pytest.mark.parametrize(
    ("signum", "name"),
    [
        (signal.SIGKILL, "SIGKILL"),
        (9, "SIGKILL"),
        (15, "SIGTERM"),
        (signal.SIGSEGV, "SIGSEGV"),
        (250, "250"),
        (0, "0"),
        (None, "None"),
    ],
)
def test_signal_name(signum: int | None, name: str) -> None:
    """Signals Python names get their name; any other number is shown as the number."""
    assert signal_name(signum) == name


def test_describe_unnamed_signal() -> None:
    """A signal without a name is logged by its number."""
    assert Exit(Ending.KILLED, signal=250).describe() == "killed by signal 250"
