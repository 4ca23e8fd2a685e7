"""The seeded plan of a soak: rounds (one server each, with drawn options) of events.

The plan is a pure function of the seed and the command line, so ``--seed N`` replays the
same sequence; the run injects a prefix of it (it stops injecting when time is up). Events
pick their target worker by rank among the running tasks (``pick`` modulo their number).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

#: Bugs known on the current code (fixes are under way). ``--mix safe`` leaves out the events
#: that hit the first five and tolerates the symptoms of the last two.
KNOWN_BUGS = {
    "privdrop-orphans": "workers outlive a killed master when user/group is set",
    "slow-exit-judged": "a slow worker_exit aborted for timeout after a finish/recycle is counted",
    "alarm-inherited": "the master's SIGALRM handler is inherited by workers when backoff is on",
    "backoff-retired": "backoff stalled by a retired worker",
    "retired-id-state": "a retired id that comes back keeps its restart count/backoff",
    "title-after-hup": "the master's title is lost after HUP",
    "g23-reload-failures": "gunicorn 23 can fail requests under heavy reload/scale load",
}

SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT", "SIGSEGV")
EXIT_STATUSES = (0, 1, 2, 42, 137)
FINALES = ("term", "int-group", "kill-master", "cap", "finish-all")
SIMPLE = ("kill", "ttin", "ttou", "hup", "usr1")
#: Master signals whose combined effect depends on the order the master takes them in (a
#: HUP re-reads `workers`; a TTOU then TTIN renews the top task). Sent together, they may
#: be taken either way round: pending signals are usually run lowest number first, but a
#: TTOU once went ahead of a HUP sent before it while the master was taking up its
#: workers' SIGCHLDs (CPython runs the handlers of pending signals in one pass by number,
#: and one that arrives during the pass is run in it only if its number is still ahead).
#: The contract fixes no order for them, so the soak never sends two of them at once;
#: `during-reload` sends the second once the first is taken up.
ORDERED = frozenset({"hup", "ttin", "ttou"})


@dataclass(frozen=True)
class Traits:
    """What a worker class can be asked to do."""

    signals: tuple[str, ...] = SIGNALS
    hang: bool = True  # a blocking request stops its heartbeat (gthread: threads keep it)
    recycle: bool = True  # the class leaves its loop when its `alive` flag is cleared
    ignore_term: bool = True  # the app runs in the main thread, where it may set handlers
    app: str = "wsgi"  # the soak's app it serves: wsgi, asgi, aiohttp
    # As it stops, the class drops connections it accepted but has not read a request from
    # (uvicorn, aiohttp): under plain gunicorn too, a client may see a reset during a reload.
    drops_on_stop: bool = False

    @property
    def asgi(self) -> bool:
        return self.app == "asgi"


def traits(worker_class: str) -> Traits:
    if worker_class == "gthread":
        return Traits(hang=False, ignore_term=False)
    if "uvicorn" in worker_class.lower():
        # uvicorn takes no action on SIGQUIT and never reads `alive`.
        return Traits(
            signals=("SIGKILL", "SIGTERM", "SIGINT", "SIGSEGV"), recycle=False, app="asgi", drops_on_stop=True
        )
    if worker_class == "asgi":
        return Traits(app="asgi")
    if worker_class.startswith("aiohttp."):
        # aiohttp's workers (GunicornWebWorker, GunicornUVLoopWebWorker) run the app on their
        # asyncio loop in the main thread and take TERM, INT, QUIT and ABRT through it; their
        # loop reads `alive` once a second and leaves with sys.exit(0) (max_requests, a
        # cleared `alive`, a stop), and a blocking request stops their heartbeat. Like
        # uvicorn, they drop connections they have not read from as they stop.
        return Traits(app="aiohttp", drops_on_stop=True)
    return Traits()


@dataclass(frozen=True)
class Event:
    kind: str
    arg: str = ""
    pick: int = 0
    pause: float = 0.0  # seconds to wait before it (pacing)
    bugs: tuple[str, ...] = ()  # known bugs it may hit

    def __str__(self) -> str:
        text = self.kind + (f":{self.arg}" if self.arg else "") + (f"@{self.pick}" if self.pick else "")
        return text


@dataclass(frozen=True)
class Round:
    index: int
    workers: int
    options: dict[str, Any]
    max_requests: int
    max_requests_jitter: int
    privdrop: bool
    finale: str
    events: tuple[Event, ...] = field(default=())
    bugs: tuple[str, ...] = ()  # known bugs the round's setup may hit

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        extra = f", max_requests={self.max_requests}" if self.max_requests else ""
        extra += ", user=nobody" if self.privdrop else ""
        return f"round {self.index}: workers={self.workers}, {opts}{extra}, finale {self.finale}"


def _cost(event: Event, timeout: float) -> float:
    """Rough seconds an event takes, to fit a round's events into its time."""
    return event.pause + {"hang": timeout + 3, "hup": 3.0, "during-reload": 4.0, "slowexit": timeout + 3}.get(
        event.kind, 1.0
    )


def make_plan(
    seed: int,
    seconds: float,
    worker_class: str,
    workers: int,
    *,
    timeout: float,
    root: bool,
    mix: str = "all",
    only: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
) -> list[Round]:
    """Rounds of about 20-40 s filling ``seconds`` three times over and more (a round may end early:
    the run starts rounds while its time lasts); ``mix="safe"`` leaves out what hits a known
    bug; ``only``/``exclude`` filter event kinds."""
    rng = random.Random(seed)
    t = traits(worker_class)
    rounds: list[Round] = []
    left = 3 * seconds + 120
    while left > 5 or not rounds:
        length = min(left, rng.uniform(20, 40))
        if left - length < 15:
            length = left
        left -= length
        rounds.append(_round(rng, len(rounds), length, t, workers, timeout, root, mix, only, exclude))
    return rounds


def _round(
    rng: random.Random,
    index: int,
    length: float,
    t: Traits,
    workers: int,
    timeout: float,
    root: bool,
    mix: str,
    only: frozenset[str],
    exclude: frozenset[str],
) -> Round:
    finale = rng.choice(FINALES)
    options: dict[str, Any] = {
        "max_restarts": rng.choice([3, 5, 8]) if finale == "cap" else rng.choice([6, 15, 40, 100]),
    }
    if rng.random() < 0.35:
        options["restart_window"] = float(rng.choice([5, 10, 20]))
    if rng.random() < 0.3:
        options["max_task_restarts"] = rng.randint(2, 6)
    if rng.random() < 0.4:
        options["backoff"] = rng.choice([0.1, 0.2, 0.5])
        options["backoff_max"] = rng.choice([1.0, 2.0])
    if rng.random() < 0.4:
        options["task_id_offset"] = rng.randint(1, 50)
    max_requests = rng.randint(30, 150) if rng.random() < 0.5 else 0
    jitter = rng.randint(0, 20) if max_requests else 0
    privdrop = rng.random() < 0.4 and root  # drawn either way: the same plan as root or not
    backoff = bool(options.get("backoff"))
    bugs: list[str] = []
    if privdrop and finale == "kill-master":
        bugs.append("privdrop-orphans")
    if mix == "safe" and bugs:
        finale = "term"
        bugs = []
    events: list[Event] = []
    budget = length
    retired = False  # a HUP after a TTOU brings the retired id back (the config's workers)
    for _ in range(5000):  # the budget is spent on the events kept (bounded: --only may keep none)
        if budget <= 0:
            break
        event = _event(rng, t, workers, timeout, backoff, "max_task_restarts" in options)
        if retired and "hup" in (event.kind + event.arg) and (backoff or "max_task_restarts" in options):
            event = Event(event.kind, event.arg, event.pick, event.pause, (*event.bugs, "retired-id-state"))
        if only and event.kind not in only:
            continue
        if event.kind in exclude or (mix == "safe" and event.bugs):
            continue
        retired = retired or "ttou" in (event.kind + event.arg) or event.kind == "linger"
        budget -= _cost(event, timeout)
        events.append(event)
    return Round(index, workers, options, max_requests, jitter, privdrop, finale, tuple(events), tuple(bugs))


def _event(
    rng: random.Random, t: Traits, workers: int, timeout: float, backoff: bool, task_cap: bool
) -> Event:
    pause = round(rng.uniform(0.1, 1.2), 2)
    pick = rng.randrange(64)
    kinds = [
        ("kill-idle", 14),
        ("kill-busy", 8),
        ("exit", 8),
        ("finish", 3),
        ("hang", 3 if t.hang else 0),
        ("recycle", 5 if t.recycle else 0),
        ("slowexit", 3 if t.recycle else 1),
        ("ignoreterm", 3 if t.ignore_term else 0),
        ("linger", 3 if t.ignore_term else 0),
        ("readd", 2),
        ("alarm", 3),
        ("hup", 5),
        ("hup-workers", 3),
        ("ttin", 4),
        ("ttou", 4),
        ("usr1", 3),
        ("pair", 5),
        ("during-reload", 4),
    ]
    kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
    rescale: tuple[str, ...] = ("backoff-retired",) if backoff else ()
    readd: tuple[str, ...] = ("retired-id-state",) if backoff or task_cap else ()
    if kind in ("kill-idle", "kill-busy"):
        return Event(kind, rng.choice(t.signals), pick, pause)
    if kind == "exit":
        return Event(kind, f"{rng.choice(EXIT_STATUSES)}/{rng.choice(['os', 'sys'])}", pick, pause)
    if kind == "slowexit":
        then = rng.choice(["finish", "recycle"] if t.recycle else ["finish"])
        return Event(kind, then, pick, pause, ("slow-exit-judged",))
    if kind == "alarm":
        return Event(kind, "1", pick, pause, ("alarm-inherited",) if backoff else ())
    if kind == "hup":
        return Event(kind, "", pick, pause)
    if kind == "hup-workers":
        new = max(1, workers + rng.choice([-1, 1, 2]))
        bugs = rescale if new < workers else readd
        return Event("hup", str(new), pick, pause, bugs)
    if kind == "linger":  # the top task ignores SIGTERM, is retired, another task crashes
        return Event(kind, "", pick, pause, rescale)
    if kind in ("ttin", "readd"):
        return Event(kind, "", pick, pause, readd)
    if kind == "ttou":
        return Event(kind, "", pick, pause, rescale)
    if kind == "pair":
        # Never one master signal twice: the kernel keeps one pending instance of a signal,
        # so the master may take the pair as one. (Two kills go to two workers.) Never two
        # of HUP, TTIN and TTOU: their effect depends on their order, and two signals sent
        # at once can be taken either way (see ORDERED).
        a = rng.choice(SIMPLE)
        b = rng.choice([kind for kind in SIMPLE if (kind != a or kind == "kill") and {a, kind} - ORDERED])
        bugs = tuple(dict.fromkeys(rescale * ("ttou" in (a, b)) + readd * ("ttin" in (a, b))))
        return Event(kind, f"{a}+{b}", pick, pause, bugs)
    if kind == "during-reload":
        then = rng.choice(SIMPLE)
        bugs = rescale if then == "ttou" else readd if then == "ttin" else ()
        return Event(kind, then, pick, round(rng.uniform(0.05, 0.5), 2), bugs)
    return Event(kind, "", pick, pause)
