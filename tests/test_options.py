"""The options of ``install()``: what is accepted, what is refused and how it is said."""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from gunicorn_tornadofork.options import DEFAULT_MAX_RESTARTS, OptionError, Options, available_cpus
from server import proc_title, wait_for

pytestmark = pytest.mark.compat


def test_default_is_tornados_100() -> None:
    """Without options the cap is tornado's default, 100."""
    assert DEFAULT_MAX_RESTARTS == 100
    assert Options.parse({}).max_restarts == 100
    assert Options().max_restarts == 100


@pytest.mark.parametrize("value", [0, 1, 100, 10**12])
def test_accepted_ints(value: int) -> None:
    """Any int >= 0 is accepted as given; 0 means give up on the first counted failure."""
    parsed = Options.parse({"max_restarts": value})
    assert parsed.max_restarts == value
    assert type(parsed.max_restarts) is int


@pytest.mark.parametrize(
    "value",
    [-1, -100, True, False, "ten", "10", 10.0, 1.5, None, Decimal(10), Fraction(10), [10], b"10"],
)
def test_refused_values(value: Any) -> None:
    """Negative numbers, bools, strings, floats, None and other non-ints are refused with
    one line that names the option, what it accepts and what it got."""
    with pytest.raises(OptionError) as caught:
        Options.parse({"max_restarts": value})
    message = str(caught.value)
    assert "\n" not in message
    assert "max_restarts" in message
    assert "integer >= 0" in message
    assert repr(value) in message


@pytest.mark.parametrize("name", ["max_restart", "maxRestarts", "workers", ""])
def test_unknown_option_refused(name: str) -> None:
    """An unknown keyword is refused, naming it and the accepted options, on one line."""
    with pytest.raises(OptionError) as caught:
        Options.parse({name: 3})
    message = str(caught.value)
    assert "\n" not in message
    assert repr(name) in message
    assert "unknown option" in message
    assert "accepted options: max_restarts" in message


def test_unknown_option_refused_next_to_a_good_one() -> None:
    """A valid option does not let an unknown one through."""
    with pytest.raises(OptionError, match="'max_restart'"):
        Options.parse({"max_restarts": 5, "max_restart": 5})


def test_option_error_is_a_value_error() -> None:
    """Callers catching ValueError catch the plugin's refusals too."""
    assert issubclass(OptionError, ValueError)


def test_available_cpus_is_the_affinity_mask() -> None:
    """One worker per usable CPU means the CPUs this process may run on."""
    assert available_cpus() == len(os.sched_getaffinity(0))


def test_available_cpus_follows_a_narrowed_mask() -> None:
    """Narrowing the affinity mask (as taskset or a cgroup cpuset does) narrows the count."""
    original = os.sched_getaffinity(0)
    one = {min(original)}
    os.sched_setaffinity(0, one)
    try:
        assert available_cpus() == 1
    finally:
        os.sched_setaffinity(0, original)
    assert available_cpus() == len(original)


# -- values the arbiter could not act on --------------------------------------------------------

INT_LIMIT = "an integer >= 0 and <= 9223372036854775807"
SECONDS_LIMIT = "a number of seconds >= 0 and <= 1000000000"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # setitimer() refuses the backoff's alarm: OverflowError at the first crash.
        ({"backoff": 1e10, "backoff_max": 1e10}, f"backoff must be {SECONDS_LIMIT}, got 10000000000.0"),
        ({"backoff_max": 1e9 + 1}, f"backoff_max must be {SECONDS_LIMIT}, got 1000000001.0"),
        ({"backoff_max": float("inf")}, f"backoff_max must be {SECONDS_LIMIT}, got inf"),
        # float() of an int this large raises OverflowError.
        ({"backoff": 10**400}, f"backoff must be {SECONDS_LIMIT}, got 1000000000000000000000"),
        (
            {"restart_window": float("inf")},
            "restart_window must be a number of seconds > 0 and <= 1000000000 or None, got inf",
        ),
        # Beyond Python's 4,300 digits, str() of an int raises: no title, no GUNICORN_TASK_ID.
        ({"max_restarts": 10**5000}, f"max_restarts must be {INT_LIMIT}, got an int of 16610 bits"),
        ({"max_restarts": -(10**5000)}, "max_restarts must be an integer >= 0, got an int of 16610 bits"),
        ({"task_id_offset": 2**63}, f"task_id_offset must be {INT_LIMIT}, got 9223372036854775808"),
        ({"max_task_restarts": 2**63}, f"max_task_restarts must be {INT_LIMIT} or None, got 92233720368"),
    ],
)
def test_values_out_of_range_refused(options: dict[str, Any], message: str) -> None:
    """Values beyond what the arbiter can act on are refused with one short line naming the
    option and its accepted range."""
    with pytest.raises(OptionError) as caught:
        Options.parse(options)
    text = str(caught.value)
    assert text.startswith(f"install() option {message}")
    assert "\n" not in text and len(text) < 200


def test_largest_values_accepted() -> None:
    """The bounds themselves are accepted."""
    top = 2**63 - 1
    parsed = Options.parse(
        {
            "max_restarts": top,
            "max_task_restarts": top,
            "task_id_offset": top,
            "backoff": 10**9,
            "backoff_max": 1e9,
            "restart_window": 10**9,
        }
    )
    assert (parsed.max_restarts, parsed.max_task_restarts, parsed.task_id_offset) == (top, top, top)
    assert (parsed.backoff, parsed.backoff_max, parsed.restart_window) == (1e9, 1e9, 1e9)


def test_long_values_shown_short() -> None:
    """A long value is cut in the message, which stays one line."""
    with pytest.raises(OptionError) as caught:
        Options.parse({"backoff": "x" * 1000})
    assert str(caught.value).endswith("got '" + "x" * 76 + "...")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("backoff=1e10, backoff_max=1e10", f"backoff must be {SECONDS_LIMIT}, got 10000000000.0"),
        ("backoff=10**400, backoff_max=10**400", f"backoff must be {SECONDS_LIMIT}, got 100000"),
        ("max_restarts=10**5000", f"max_restarts must be {INT_LIMIT}, got an int of 16610 bits"),
        ("task_id_offset=10**5000", f"task_id_offset must be {INT_LIMIT}, got an int of 16610 bits"),
        ("max_restarts=-10**5000", "max_restarts must be an integer >= 0, got an int of 16610 bits"),
    ],
    ids=[
        "backoff-setitimer",
        "backoff-float-overflow",
        "max-restarts-digits",
        "offset-digits",
        "negative-digits",
    ],
)
def test_values_out_of_range_refused_by_real_gunicorn(gunicorn: Any, options: str, message: str) -> None:
    """Each of these once started the server and crashed the master later (OverflowError at
    the first crash, exit 255) or crashed it with a traceback and its pidfile left behind;
    now: one error line, status 1, pidfile removed, no worker."""
    server = gunicorn(options=options, config="workers = 1\n")
    assert server.wait_exit() == 1
    errors = [line for line in server.log().splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, errors
    assert f"gunicorn_tornadofork: install() option {message}" in errors[0]
    assert "Traceback" not in server.log() + server.output_text()
    assert "Booting worker" not in server.log()
    assert not server.pidfile.exists()


def test_largest_values_work_in_real_gunicorn(gunicorn: Any) -> None:
    """At the bounds the arbiter acts as documented: the crash waits out a backoff of 10**9
    seconds, the title shows the cap, the ids start at the offset, shutdown is clean."""
    top = 2**63 - 1
    server = gunicorn(
        options=f"max_restarts={top}, task_id_offset={top}, backoff=1e9, backoff_max=1e9, "
        "restart_window=1e9, max_task_restarts=" + str(top),
        config="workers = 2\n",
    )
    pids = server.wait_workers([top, top + 1])
    os.kill(pids[top + 1], signal.SIGKILL)
    server.wait_log(f"task {top + 1} (pid {pids[top + 1]}) killed by signal SIGKILL, restarting in 1e+09s")
    wait_for(lambda: proc_title(server.pid).endswith(f"tasks 1/2 restarts 1/{top}"), 10, "the title")
    assert server.worker_pids() == {top: pids[top]}
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert "Traceback" not in server.log() + server.output_text()


def test_backoff_max_follows_a_long_backoff_when_unset() -> None:
    """Unset, ``backoff_max`` is 30 s, or ``backoff`` when that is longer; set, it must not
    be below ``backoff``."""
    assert Options.parse({"backoff": 60}).backoff_max == 60.0
    assert Options.parse({"backoff": 1}).backoff_max == 30.0
    assert Options.parse({"backoff": 60, "backoff_max": 90}).backoff_max == 90.0
    with pytest.raises(OptionError, match=r"backoff_max must be >= backoff \(60.0\), got 30.0"):
        Options.parse({"backoff": 60, "backoff_max": 30})
