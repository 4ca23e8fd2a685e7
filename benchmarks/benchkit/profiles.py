"""How many repeats and how long: ``--quick`` for development, the full run for the table."""

from __future__ import annotations

from dataclasses import dataclass

FIGURES = ("boot", "respawn", "storm", "throughput", "rest", "reload")


@dataclass(frozen=True)
class Profile:
    """Sizes are ``(workers, repeats)``: N = 256 gets fewer repeats, as plain gunicorn takes
    about 13 s to boot it (its 0-100 ms sleep after each fork)."""

    name: str
    boot_sizes: tuple[tuple[int, int], ...]  # (workers, pairs)
    respawn_workers: int
    respawn_runs: int
    respawn_kills: int
    storm_sizes: tuple[tuple[int, int], ...]  # (workers, runs)
    storm_seconds: float
    throughput_workers: int
    throughput_connections: int
    throughput_pairs: int
    throughput_seconds: int  # wrk takes whole seconds
    rest_sizes: tuple[tuple[int, int], ...]  # (workers, pairs)
    rest_seconds: float
    reload_workers: int
    reload_connections: int
    reload_pairs: int
    reload_steady_seconds: float


QUICK = Profile(
    name="quick",
    boot_sizes=((1, 3), (4, 3), (16, 3), (64, 3), (256, 1)),
    respawn_workers=4,
    respawn_runs=2,
    respawn_kills=10,
    storm_sizes=((8, 2), (64, 2), (256, 1)),
    storm_seconds=2.0,
    throughput_workers=1,
    throughput_connections=8,
    throughput_pairs=8,
    throughput_seconds=1,
    rest_sizes=((16, 2), (256, 1)),
    rest_seconds=10.0,
    reload_workers=16,
    reload_connections=8,
    reload_pairs=3,
    reload_steady_seconds=1.0,
)
FULL = Profile(
    name="full",
    boot_sizes=((1, 7), (4, 7), (16, 7), (64, 7), (256, 2)),
    respawn_workers=4,
    respawn_runs=3,
    respawn_kills=25,
    storm_sizes=((8, 3), (64, 3), (256, 2)),
    storm_seconds=5.0,
    throughput_workers=1,
    throughput_connections=8,
    throughput_pairs=20,
    throughput_seconds=2,
    rest_sizes=((16, 4), (256, 2)),
    rest_seconds=30.0,
    reload_workers=16,
    reload_connections=8,
    reload_pairs=6,
    reload_steady_seconds=2.0,
)
