"""The options of ``install()``: what is accepted, what is refused and how it is said."""

from __future__ import annotations

import os
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from gunicorn_tornadofork.options import DEFAULT_MAX_RESTARTS, OptionError, Options, available_cpus

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
