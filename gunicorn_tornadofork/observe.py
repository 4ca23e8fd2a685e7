"""What the arbiter shows of its tasks: the master's title, one USR1 line per task, the
control socket's listing, statsd metrics and the Prometheus files.

Fed by the task table's events (a worker forked, reaped, judged; the state changed); nothing
here decides what the arbiter does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import setproctitle
from gunicorn.glogging import Logger as _GunicornLogger

from .options import Options
from .tasks import Outcome, TaskState, TaskTable

if TYPE_CHECKING:
    from .prometheus import Exporter

#: gunicorn's own logger's debug(): it sends nothing but the log line.
_PLAIN_DEBUG = _GunicornLogger.debug


class Observer:
    """The arbiter's observability, over its task table."""

    def __init__(self, log: Any, options: Options, table: TaskTable, prometheus: Exporter | None) -> None:
        self.log = log
        self.options = options
        self.table = table
        self.prometheus = prometheus
        self.live_gauge: int | None = None  # the last live-task count sent as a metric
        self.failed_gauge = 0  # the last failed-task count sent as a metric

    # -- events ---------------------------------------------------------------------------

    def spawned(self, task: int, pid: int) -> None:
        """``pid`` now runs ``task`` (forked inside ``prometheus.forking(task)`` when there is
        an exporter, for the child to take its metrics identifier)."""
        if self.prometheus is not None:
            self.prometheus.spawned(pid, task)

    def reaped(self, pid: int, outcome: Outcome | None) -> None:
        """The worker ``pid`` was reaped and judged (``outcome``, None for no task's)."""
        if self.prometheus is not None:
            self.prometheus.reaped(pid, outcome)

    def judged(self, outcome: Outcome) -> None:
        """statsd counters of a judged end: a counted restart, giving up."""
        if not (outcome.counted or outcome.give_up) or not self._debug_wanted():
            return
        if outcome.counted:
            self.log.debug("restart counted", extra=statsd("restarts", 1, "counter"))
        if outcome.give_up:
            self.log.debug("gave up", extra=statsd("gave_up", 1, "counter"))

    def _debug_wanted(self) -> bool:
        """Whether a debug line (and its metric) can reach anything: gunicorn's plain logger
        drops it below level debug, but statsd's and others' may send its metric anyway."""
        log = self.log
        if getattr(type(log), "debug", None) is not _PLAIN_DEBUG:
            return True
        error_log = getattr(log, "error_log", None)
        return error_log is None or bool(error_log.isEnabledFor(logging.DEBUG))

    def show(self, proc_name: str) -> None:
        """Title the master with the tasks' state; send the gauges and write the metrics that
        changed."""
        table = self.table
        live = table.running_count()
        failed = table.failed_count()
        title = (
            f"gunicorn: master [{proc_name}] tasks {live}/{table.size} "
            f"restarts {table.counted_restarts()}/{self.options.max_restarts}"
        )
        if failed:
            title += f" failed {failed}"
        if setproctitle.getproctitle() != title:
            setproctitle.setproctitle(title)
        if self.live_gauge != live:
            self.live_gauge = live
            self.log.debug("%d tasks live", live, extra=statsd("tasks_live", live, "gauge"))
        if self.failed_gauge != failed:
            self.failed_gauge = failed
            self.log.debug("%d tasks failed", failed, extra=statsd("failed", failed, "gauge"))
        if self.prometheus is not None:
            self.prometheus.publish(table)

    def promoted(self) -> None:
        """This master took over from the one it was started by (USR2), which is gone."""
        if self.prometheus is not None:
            self.prometheus.sweep()  # the old master's files, if it was killed

    def closing(self) -> None:
        """The master ends."""
        if self.prometheus is not None:
            self.prometheus.close()

    # -- views ------------------------------------------------------------------------------

    def task_lines(self) -> list[str]:
        """One line per task, for USR1."""
        return [describe_task(task) for task in self.table.states()]

    def listing(self, listing: dict[str, Any], workers: Mapping[int, Any]) -> dict[str, Any]:
        """gunicorn's ``show workers`` listing with each worker's task id and every task."""
        for entry in listing.get("workers", []):
            entry["task_id"] = getattr(workers.get(entry.get("pid", -1)), "task_id", None)
        listing["tasks"] = [asdict(task) for task in self.table.states()]
        return listing


def describe_task(task: TaskState) -> str:
    """One line for a task: ``task 2: pid 4711, up 12.0s, 1 restart``."""
    if task.done:
        return f"task {task.task_id}: finished"
    if task.failed:
        return f"task {task.task_id}: failed, {task.restarts} restarts"
    if task.pid is None:
        waiting = f", backoff {task.waiting:.1f}s left" if task.waiting else ""
        return f"task {task.task_id}: no worker{waiting}, {task.restarts} restarts"
    up = f", up {task.uptime:.1f}s" if task.uptime is not None else ""
    return f"task {task.task_id}: pid {task.pid}{up}, {task.restarts} restarts"


def statsd(name: str, value: int, mtype: str) -> dict[str, Any]:
    """The ``extra`` that gunicorn's statsd logger turns into a metric."""
    return {"metric": f"gunicorn.tornadofork.{name}", "value": value, "mtype": mtype}
