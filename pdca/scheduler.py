"""``pdca daemon``: APScheduler 3 as the clock; no business rules here.

What is due is computed from the plan and stored as rows by :meth:`pdca.Engine.tick`;
APScheduler only wakes the process up. Jobs live in a ``MemoryJobStore`` and are rebuilt
from the plan at start-up (explicit ids, ``replace_existing=True``,
``misfire_grace_time=None``, ``coalesce=True``): one job per moment something becomes due
in the current and the next fiscal year, a daily job that rebuilds them, and a heartbeat
that retries queued notices and catches up after a database outage. Every job calls the
same function as ``pdca tick``, so two daemons, or a daemon and ``tick`` from cron, fire
each due firing once. The daemon catches up at start and stops cleanly on SIGTERM and
SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from . import log
from .calendar import TOKYO, fiscal_year_of
from .engine import Engine
from .errors import InvalidInput, PdcaError
from .notify import Notifier
from .schedule import due_for_year

HEARTBEAT_MINUTES = 5.0


def due_moments(engine: Engine, after: datetime) -> list[datetime]:
    """The moments after ``after`` at which something becomes due, this and next FY."""
    plan = engine.plan
    fy = fiscal_year_of(after)
    moments = {
        d.at
        for year in range(
            max(plan.first_fiscal_year, fy - 1), min(plan.last_fiscal_year, fy + 1) + 1
        )
        for d in due_for_year(plan, year)
        if d.at > after
    }
    return sorted(moments)


class Daemon:
    """The long-running scheduler of one database."""

    def __init__(
        self,
        engine: Engine,
        *,
        notifier: Notifier | None = None,
        heartbeat_minutes: float = HEARTBEAT_MINUTES,
    ) -> None:
        if engine.simulation:
            raise InvalidInput(
                "pdca daemon runs on real time; a simulation database is driven by "
                "`pdca simulate` or `pdca tick --at`"
            )
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.engine = engine
        self.notifier = notifier
        self.heartbeat_minutes = heartbeat_minutes
        self._log = log.get_logger()
        self._lock = threading.Lock()
        self.ticks = 0
        self._stopping = False
        self.scheduler = BlockingScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=TOKYO,
        )

    def tick(self) -> None:
        """One tick, as `pdca tick`; errors are logged and the next job tries again."""
        with self._lock:
            try:
                report = self.engine.tick(notifier=self.notifier)
            except PdcaError as exc:
                self._log.error("tick_failed", error=str(exc))
                return
            finally:
                self.ticks += 1
        for firing in report.firings:
            self._log.info(
                "fired",
                key=firing.key,
                action=firing.action,
                ref=firing.ref,
                trigger=firing.trigger,
                status=firing.status,
                outcome=firing.outcome,
            )

    def plan_jobs(self) -> int:
        """(Re)build the jobs from the plan; returns how many due moments are scheduled."""
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.date import DateTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        moments = due_moments(self.engine, datetime.now(UTC))
        for moment in moments:
            self.scheduler.add_job(
                self.tick,
                DateTrigger(run_date=moment),
                id=f"due-{moment.astimezone(UTC):%Y%m%dT%H%M%S}",
                replace_existing=True,
            )
        self.scheduler.add_job(
            self._daily,
            CronTrigger(hour=0, minute=10, timezone=TOKYO),
            id="daily",
            replace_existing=True,
        )
        self.scheduler.add_job(
            self.tick,
            IntervalTrigger(minutes=self.heartbeat_minutes),
            id="heartbeat",
            replace_existing=True,
        )
        return len(moments)

    def _plan_heartbeat_only(self) -> None:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        self.scheduler.add_job(self._daily, CronTrigger(hour=0, minute=10, timezone=TOKYO),
                               id="daily", replace_existing=True)
        self.scheduler.add_job(self._heartbeat, IntervalTrigger(minutes=self.heartbeat_minutes),
                               id="heartbeat", replace_existing=True)

    def _heartbeat(self) -> None:
        """A tick; once the database answers again, the dated jobs are planned too."""
        self.tick()
        if len(self.scheduler.get_jobs()) <= 2:
            try:
                self.plan_jobs()
            except PdcaError as exc:
                self._log.error("planning_jobs_failed", error=str(exc))

    def _daily(self) -> None:
        self.tick()
        try:
            self.plan_jobs()
        except PdcaError as exc:
            self._log.error("planning_jobs_failed", error=str(exc))

    def run(self, *, install_signals: bool = True) -> None:
        """Catch up, plan the jobs, and run until stopped (SIGTERM, SIGINT or :meth:`stop`)."""
        previous: dict[signal.Signals, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        self.tick()
        try:
            count = self.plan_jobs()
        except PdcaError as exc:
            # The database is away (an outage at start-up): run on the heartbeat, which
            # catches up when it is back, and plan the dated jobs at the daily re-planning.
            self._log.error("planning_jobs_failed", error=str(exc))
            self._plan_heartbeat_only()
            count = 0
        from apscheduler.triggers.date import DateTrigger

        def started() -> None:
            # The first job, once the scheduler runs: from here a signal can stop it. A
            # signal that came just before it ran is honoured here.
            self._log.info("daemon_started", due_moments=count,
                           heartbeat_minutes=self.heartbeat_minutes)
            if self._stopping:
                self.stop()

        self.scheduler.add_job(started, DateTrigger(run_date=datetime.now(UTC)), id="started",
                               replace_existing=True)
        try:
            if not self._stopping:
                self.scheduler.start()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._log.info("daemon_stopped", ticks=self.ticks)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._log.info("daemon_stopping", signal=signal.Signals(signum).name)
        self.stop()

    def stop(self) -> None:
        """Stop after the job that is running, if any (also before the loop started)."""
        self._stopping = True
        if self.scheduler.running:
            with contextlib.suppress(Exception):  # already shutting down
                self.scheduler.shutdown(wait=False)


def run_daemon(
    url: str,
    *,
    notifier: Notifier | None = None,
    heartbeat_minutes: float = HEARTBEAT_MINUTES,
    on_start: Callable[[Daemon], None] | None = None,
) -> None:
    """Open ``url`` and run the daemon until SIGTERM or SIGINT."""
    engine = Engine.open(url)
    try:
        daemon = Daemon(engine, notifier=notifier, heartbeat_minutes=heartbeat_minutes)
        if on_start is not None:
            on_start(daemon)
        daemon.run()
    finally:
        engine.close()


__all__ = ["HEARTBEAT_MINUTES", "Daemon", "due_moments", "run_daemon"]
