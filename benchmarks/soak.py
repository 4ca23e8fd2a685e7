"""The soak: a seeded random campaign of faults under load against real gunicorn servers
with the plugin, checked throughout against an independent model of the contract.

    python benchmarks/soak.py --seconds 90 --seed 11
    python benchmarks/soak.py --seconds 60 --seed 3 --worker-class gthread --workers 4

Each round starts a server on loopback with options drawn from the seed, keeps a bounded
HTTP load on it, injects the round's events (signals, self-exits, finish_task(), hangs,
recycles, reloads, scaling, ...), then ends it (TERM, INT to the group, SIGKILL of the
master, or the restart cap). The last line is the summary, ending in ``N violations``; on
any violation the exit status is 1 and the seed and event log to replay it are printed.
``--mix safe`` leaves out the events that hit bugs known on the current code.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soakkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
