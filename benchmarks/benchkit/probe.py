"""The reload figure's load: ``wrk`` with ``probe.lua``, which records the start and end of
every request on CLOCK_MONOTONIC, and the cutting of that record into windows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.runner import BenchError

PROBE = Path(__file__).with_name("probe.lua")
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")


@dataclass
class Record:
    """What one wrk run saw: each answered request as (start, end) in ns, the ends of the
    answers that were not 2xx, and wrk's error counts (socket errors, non-2xx/3xx, timeouts)."""

    requests: list[tuple[int, int]] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def failed(self) -> int:
        """Failed requests over the run: wrk's socket errors, timeouts and non-2xx/3xx
        answers, and any 3xx (the app answers 200 only)."""
        non_2xx_not_counted = len(self.bad) - self.errors.get("status", 0)
        return sum(self.errors.values()) + max(0, non_2xx_not_counted)

    def rate(self, begin: int, end: int) -> float:
        """Answered requests per second that ended in [begin, end)."""
        if end <= begin:
            return math.nan
        count = sum(1 for _, stop in self.requests if begin <= stop < end)
        return count * 1e9 / (end - begin)

    def latencies_within(self, begin: int, end: int) -> list[int]:
        """Latencies (ns) of the requests that started and ended inside [begin, end)."""
        return [stop - start for start, stop in self.requests if start >= begin and stop < end]

    def latencies_across(self, begin: int, end: int) -> list[int]:
        """Latencies (ns) of the requests in flight at some moment of [begin, end]: those
        that a reload in that window could have touched."""
        return [stop - start for start, stop in self.requests if stop >= begin and start <= end]


def parse_probe(out: str) -> Record:
    """The ``PROBE`` lines of wrk's output (times in µs) as a :class:`Record` (times in ns)."""
    record = Record()
    for line in out.splitlines():
        if not line.startswith("PROBE "):
            continue
        parts = line.split()
        if parts[1] == "r":
            record.requests.append((int(parts[2]) * 1000, int(parts[3]) * 1000))
        elif parts[1] == "bad":
            record.bad.append(int(parts[2]) * 1000)
        elif parts[1] == "errors":
            record.errors = dict(zip(ERROR_KINDS, map(int, parts[2:]), strict=True))
    if not record.errors and not record.requests:
        raise BenchError(f"no probe lines in wrk's output:\n{out[-2000:]}")
    return record


def percentile(values: list[int] | list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank: the smallest value that at least
    ``q`` % of the values do not exceed; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])
