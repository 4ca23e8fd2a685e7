"""Benchmark gunicorn with gunicorn_tornadofork against plain gunicorn.

    python benchmarks/bench.py --quick      # a few repeats, about five minutes
    python benchmarks/bench.py              # the full run, about fifteen minutes
    python benchmarks/bench.py --only reload,boot

Both servers run the same gunicorn (the one of this Python), worker class, app and settings;
only ``install()`` in ``on_starting`` differs. Runs alternate plugin and plain (A B A B ...);
where both servers sit idle between events (respawn, rest, reload) they run side by side and
the events alternate between them. Every figure is the median of its samples; the table gives
the plugin/plain ratio of the medians against its target, and the interquartile range of the
ratios of samples taken together, which shows the machine's noise. tornado's own
``fork_processes`` with a trivial child is measured as the floor of boot, respawn and crash
storm. The table is printed as Markdown and the numbers, every sample included, are written
to ``benchmarks/results/latest.json``. The reload figure is labelled with the gunicorn it ran:
run ``--only reload`` once in a Python with each gunicorn to compare versions.

Every server runs in its own session on loopback and is killed with its whole process group
when its measurement ends; the benchmark then waits until no process of it holds the pipe
that reports readiness, so nothing outlives a run. The code is in ``benchmarks/benchkit/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
