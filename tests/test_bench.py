"""The benchmark's pure parts (benchmarks/benchkit): targets and ratios, the reading of wrk's
output, the windows and percentile of the reload figure, and the end of a reload."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from benchkit.figures import Figure
from benchkit.loadgen import parse_wrk
from benchkit.probe import Record, parse_probe, percentile
from benchkit.reload import reload_done
from benchkit.report import fmt, table
from benchkit.runner import Event
from benchkit.servers import PLAIN, PLUGIN, gunicorn_config

pytestmark = pytest.mark.timeout(30)


def figure(plugin: list[float], plain: list[float], **kw: object) -> Figure:
    return Figure("f", "s", samples={PLUGIN: plugin, PLAIN: plain}, **kw)  # type: ignore[arg-type]


def test_ratio_of_medians_and_paired_spread() -> None:
    f = figure([1.0, 2.0, 9.0], [2.0, 2.0, 2.0], target_kind="ratio<=", target=1.0)
    assert f.ratio() == 1.0
    assert f.met() is True
    assert f.paired_ratios() == [0.5, 1.0, 4.5]
    assert f.spread() is not None


@pytest.mark.parametrize(
    ("kind", "target", "plugin", "plain", "met"),
    [
        ("ratio<=", 1.0, 1.01, 1.0, False),
        ("ratio>=", 0.9, 0.9, 1.0, True),
        ("ratio>=", 0.9, 0.89, 1.0, False),
        ("diff<=", 2.0, 27.0, 25.0, True),
        ("diff<=", 2.0, 27.5, 25.0, False),
    ],
)
def test_targets(kind: str, target: float, plugin: float, plain: float, met: bool) -> None:
    assert figure([plugin], [plain], target_kind=kind, target=target).met() is met


def test_failed_requests_are_added_up_not_a_median() -> None:
    f = figure([0, 0, 3], [0, 0, 0], target_kind="total<=", target=0, stat="total")
    f.unit = "failed"
    assert f.median(PLUGIN) == 3
    assert f.ratio() is None  # plain failed none: no ratio
    assert f.met() is False
    assert f.target_text() == "0"
    assert "| 3 failed | 0 failed | - |" in table([f])
    assert figure([0, 0], [1, 2], target_kind="total<=", target=0, stat="total").met() is True


def test_no_target_no_verdict() -> None:
    assert figure([1.0], [1.0]).met() is None
    assert figure([1.0], [0.0], target_kind="ratio<=", target=1.0).met() is None


def test_formats() -> None:
    assert fmt(0.00693, "s") == "6.93 ms"
    assert fmt(1.935, "s") == "1935 ms"
    assert fmt(0.85, "%") == "85 %"
    assert fmt(12.34, "CPU µs") == "12.3 µs"
    assert fmt(None, "s") == "-"


WRK = """Running 2s test @ http://127.0.0.1:1/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.31ms  183.34us   4.43ms   90.71%
    Req/Sec     6.08k   211.45     6.35k    75.00%
  12093 requests in 2.00s, 1.78MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 2
Requests/sec:   6042.17
Transfer/sec:      0.89MB
"""


def test_parse_wrk() -> None:
    rate, count, errors = parse_wrk(WRK)
    assert (rate, count) == (6042.17, 12093)
    assert errors == "Socket errors: connect 0, read 3, write 0, timeout 0; Non-2xx or 3xx responses: 2"


def test_parse_probe_and_windows() -> None:
    out = (
        WRK
        + "PROBE errors 0 3 0 1 0\nPROBE r 1000 1500\nPROBE r 1400 2600\nPROBE r 3000 3100\nPROBE bad 2600\n"
    )
    record = parse_probe(out)
    assert record.errors == {"connect": 0, "read": 3, "write": 0, "status": 1, "timeout": 0}
    assert record.requests == [(1_000_000, 1_500_000), (1_400_000, 2_600_000), (3_000_000, 3_100_000)]
    assert record.failed() == 4  # the non-2xx answer is wrk's status error, counted once
    assert record.latencies_within(0, 2_000_000) == [500_000]
    # in flight at some moment of [2.0 ms, 2.9 ms]: only the second request
    assert record.latencies_across(2_000_000, 2_900_000) == [1_200_000]
    assert record.rate(0, 2_000_000) == pytest.approx(500.0)  # one answer in 2 ms
    assert math.isnan(record.rate(5, 5))


def test_failed_counts_a_3xx_that_wrk_does_not() -> None:
    record = Record(bad=[1, 2], errors={"connect": 1, "status": 1})
    assert record.failed() == 3


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([5], 99) == 5
    assert percentile(list(range(1, 1001)), 99) == 990
    assert math.isnan(percentile([], 99))


class FakeServer:
    def __init__(self) -> None:
        self.ready: dict[int, Event] = {}
        self.reaped: dict[int, Event] = {}

    def up(self, pid: int, ns: int) -> None:
        self.ready[pid] = Event("R", pid, 0, ns)

    def down(self, pid: int, ns: int) -> None:
        self.reaped[pid] = Event("X", pid, 0, ns)


def test_reload_ends_when_old_are_reaped_and_successors_ready() -> None:
    server = FakeServer()
    for pid in (1, 2):
        server.up(pid, 0)
    old = {1, 2}
    assert reload_done(server, old, 100, 2) is None  # type: ignore[arg-type]
    server.down(1, 150)
    server.up(3, 200)
    server.down(2, 250)
    assert reload_done(server, old, 100, 2) is None  # type: ignore[arg-type]
    server.up(4, 300)
    server.down(4, 310)  # a successor that died does not count
    assert reload_done(server, old, 100, 2) is None  # type: ignore[arg-type]
    server.up(5, 400)
    assert reload_done(server, old, 100, 2) == 400  # type: ignore[arg-type]


def test_configs_differ_only_by_install() -> None:
    args = (16, 8000, Path("/tmp/x"), "sync", 1, 100)
    plugin, plain = gunicorn_config(PLUGIN, *args, reaps=True), gunicorn_config(PLAIN, *args, reaps=True)
    assert plugin.startswith(plain)
    assert "install(server" in plugin[len(plain) :]
    assert "child_exit" in plain
    assert "child_exit" not in gunicorn_config(PLAIN, *args)
