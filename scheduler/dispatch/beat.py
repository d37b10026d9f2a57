"""Celery beat as the dispatcher: the dispatch schedule, and the scheduler that runs it in-process.

``CELERY_BEAT_SCHEDULER = "scheduler.dispatch.beat:DispatchingScheduler"`` makes
``celery beat`` run a dispatcher tick itself each time the dispatch PeriodicTask is due,
instead of sending a tick message that a worker would run: ticks never wait in the job
queue behind long jobs, and a deployment needs no process of its own for them. Every
other periodic task is sent as django-celery-beat's ``DatabaseScheduler`` sends it.
"""

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from celery.beat import ScheduleEntry
from celery.utils.time import maybe_make_aware
from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, InterfaceError, close_old_connections, connection, transaction
from django_celery_beat import schedulers
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry
from typing_extensions import override

from scheduler.checks import check_before_start, names_subclass
from scheduler.conf import scheduler_settings
from scheduler.dispatch.dispatcher import Dispatcher, check_at_start
from scheduler.dispatch.stopping import StopSignals
from scheduler.services import refusals

logger = logging.getLogger(__name__)

DISPATCH_PERIODIC_TASK_NAME = "scheduler: dispatch due jobs"
DISPATCH_TASK_NAME = "scheduler.dispatch"
#: The value of ``CELERY_BEAT_SCHEDULER`` that makes beat the dispatcher.
DISPATCHING_SCHEDULER = "scheduler.dispatch.beat:DispatchingScheduler"
#: How long after a reload of the schedule that PostgreSQL failed beat tries again.
RELOAD_RETRY_SECONDS = 10


def ensure_dispatch_schedule() -> PeriodicTask:
    """Create or update the PeriodicTask that runs a dispatcher tick every interval.

    Idempotent. A fractional interval (0.5 s) is kept to the microsecond. If a plain
    beat scheduler sends the tick as a task instead, a tick not started within the
    interval expires, so a backlog of ticks queued while workers were busy is not run
    all at once.
    """
    interval = scheduler_settings.DISPATCH_INTERVAL_SECONDS
    with _one_writer():
        task, created = _write_dispatch_schedule(interval)
    logger.info(
        "dispatch schedule %s every_seconds=%s", "created" if created else "updated", interval
    )
    return task


def ensure_periodic_task(
    name: str, *, task: str, interval: float, description: str
) -> tuple[PeriodicTask, bool]:
    """The PeriodicTask ``name``, created if missing to send ``task`` every ``interval``
    seconds, and whether it was created; one that exists is kept as an operator left it.

    For a project's own periodic tasks (the payments demo's sweep): written one writer
    at a time, as the dispatch entry is, and a send not started within ``interval``
    expires, so sends queued while workers were busy do not all run.
    """
    with _one_writer():
        entry = PeriodicTask.objects.filter(name=name).first()
        if entry is not None:
            return entry, False
        entry = PeriodicTask.objects.create(
            name=name,
            task=task,
            interval=_interval_schedule(interval),
            expire_seconds=math.ceil(interval),
            description=description,
        )
    logger.info("periodic task created name=%r every_seconds=%s", name, interval)
    return entry, True


@contextmanager
def _one_writer() -> Iterator[None]:
    """One writer of beat's entries at a time (several replicas' migrate, a beat
    starting beside one): both would create one (one failing on its unique name) and
    its interval.

    The lock is the transaction's, taken in the writes' own transaction: a session's,
    taken and released in statements of their own, outlived its writer behind a pooler
    in transaction mode (PgBouncer, RDS Proxy), which gives each transaction any
    session, and the next writer waited for it for good.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # First in the transaction: above READ COMMITTED its snapshot, taken by its
            # first query, the lock's, would predate the other writer's commit.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [DISPATCH_TASK_NAME])
        yield


def _interval_of(interval: float) -> tuple[int, str]:
    """The IntervalSchedule ``(every, period)`` of ``interval`` seconds."""
    if float(interval).is_integer():
        return int(interval), IntervalSchedule.SECONDS
    return round(interval * 1_000_000), IntervalSchedule.MICROSECONDS


def _entry_fields(interval: float) -> dict[str, Any]:
    """The dispatch entry's fields but its interval and description, as the settings
    say; what an operator changed in them is written back."""
    return {
        "task": DISPATCH_TASK_NAME,
        "crontab": None,
        "solar": None,
        "clocked": None,
        "expire_seconds": math.ceil(interval),
        "queue": scheduler_settings.QUEUE_NAME,
        # The scheduler's own entry: one an operator disabled (or made one-off, or to
        # start later) dispatched nothing, for good, and silently.
        "enabled": True,
        "one_off": False,
        "start_time": None,
        "expires": None,
    }


def _interval_schedule(interval: float) -> IntervalSchedule:
    """The IntervalSchedule of ``interval`` seconds, created if there is none."""
    every, period = _interval_of(interval)
    # Not get_or_create: the table has no unique key, and an operator may have added the
    # same interval.
    schedule = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
    if schedule is None:
        schedule = IntervalSchedule.objects.create(every=every, period=period)
    return schedule


def _write_dispatch_schedule(interval: float) -> tuple[PeriodicTask, bool]:
    """The dispatch entry written for ``interval``, and whether it was created."""
    with transaction.atomic():
        task, created = PeriodicTask.objects.update_or_create(
            name=DISPATCH_PERIODIC_TASK_NAME,
            defaults={
                **_entry_fields(interval),
                "interval": _interval_schedule(interval),
                "description": "Sends jobs that are nearly due from PostgreSQL to SQS "
                "(written by the scheduler app after migrate and as beat starts; run by "
                "beat itself).",
            },
        )
    return task, created


def _changed_fields(entry: ModelEntry | None) -> list[str]:
    """The fields of the dispatch entry beat loaded that the settings do not give it
    (``["enabled"]`` when beat loaded none: disabled, deleted, or made a crontab)."""
    if entry is None:
        return ["enabled"]
    interval = scheduler_settings.DISPATCH_INTERVAL_SECONDS
    model = entry.model
    changed = [
        name for name, value in _entry_fields(interval).items() if getattr(model, name) != value
    ]
    if model.interval is None or (model.interval.every, model.interval.period) != _interval_of(
        interval
    ):
        changed.append("interval")
    return changed


class _Entry(ModelEntry):  # type: ignore[misc]
    """django-celery-beat's entry; the dispatch entry's is due at once when its last run
    is later than this host's clock says it is now.

    That last run, saved in the PeriodicTask, was stamped by a clock ahead: this host's
    before NTP stepped it back, or another beat's. Beat would dispatch nothing until
    that time came, jobs due and recovery included, through restarts too.
    """

    last_run_at: datetime | None

    @override
    def is_due(self) -> tuple[bool, float]:
        if self.task == DISPATCH_TASK_NAME and self.last_run_at is not None:
            now = self._default_now()
            if maybe_make_aware(self.last_run_at) > now:
                self.last_run_at = now - getattr(self.schedule, "run_every", timedelta(0))
        due: tuple[bool, float] = super().is_due()
        return due


class DispatchingScheduler(DatabaseScheduler):  # type: ignore[misc]
    """django-celery-beat's scheduler, running the dispatch entry's ticks in this process.

    A tick blocks beat while it runs: milliseconds when little is due, and at most
    about one dispatch interval with a backlog (the next tick, due at once, goes on);
    other periodic tasks wait for it. An error in a tick is logged and beat goes on.
    SIGTERM or SIGINT stops beat once the tick in progress is done; Ctrl-C again during
    a dispatcher tick stops it at once, that tick rolled back and the schedule unsaved
    (a periodic task sent since the last save may be sent again as beat starts). One
    as beat starts lets it set up its schedule (milliseconds; Ctrl-C again changes
    nothing), then beat exits before its first tick.

    Built in the main thread, not lazy (beat's own, not its banner's), it handles both
    signals of the process from then on.
    """

    Entry = _Entry

    def __init__(self, *args: Any, lazy: bool = False, **kwargs: Any) -> None:
        self._dispatcher: Dispatcher | None = None
        #: How long the tick just run took, for the next one's time (:meth:`_when`).
        self._tick_took = 0.0
        self._stop_signals = StopSignals(self._stop)
        #: Whether beat is in a tick or a save of its schedule, which a stop lets finish.
        self._busy = False
        #: Whether beat is on its way out: a stop signal then has nothing to stop.
        self._exiting = False
        if not lazy and threading.current_thread() is threading.main_thread():
            # From the start: beat builds its scheduler, which sets up its schedule, after
            # it has installed Celery's handler. That handler saved the schedule and raised
            # SystemExit wherever beat was: in a dispatch batch's transaction, the save
            # closed the batch's connection ("beat schedule save failed … connection
            # already closed") and the batch rolled back, its messages sent for nothing;
            # during the set-up, it built another scheduler, which wrote the schedule on
            # the connection the first was writing with, and beat exited 1 with a
            # traceback. A worker's embedded beat run as a thread (no multiprocessing)
            # builds it in that thread, where no handler can be set: the worker stops
            # that beat itself.
            self._stop_signals.install()
        super().__init__(*args, lazy=lazy, **kwargs)

    def _stop(self) -> None:
        """A stop signal: beat exits now between ticks, else at the end of the tick."""
        if not self._busy:
            self._exit()

    def _exit(self) -> None:
        # Celery's loop takes SystemExit as its stop: it saves the schedule (close())
        # and returns.
        if not self._exiting:
            self._exiting = True
            raise SystemExit

    @contextmanager
    def _finished_before_a_stop(self, *, stopping: str | None = None) -> Iterator[None]:
        """Run the block to its end whatever stop signal comes meanwhile; beat exits after
        it if one came, logging ``stopping`` (what beat stops after) if given."""
        outermost = not self._busy
        self._busy = True
        try:
            yield
        finally:
            if outermost:
                self._busy = False
        if outermost and self._stop_signals.received is not None:
            if stopping is not None:
                logger.info("beat stopping signal=%s %s", self._stop_signals.received, stopping)
            self._exit()

    @override
    def tick(self, *args: Any, **kwargs: Any) -> float:
        with self._finished_before_a_stop():
            interval: float = super().tick(*args, **kwargs)
        return interval

    @override
    def close(self) -> None:
        # Beat's last save of its schedule, as it exits: a stop signal now waits for it.
        self._exiting = True
        if self._stop_signals.forced is not None:
            self._stop_signals.stop_now(process="beat")
        if self._stop_signals.received is not None:
            logger.info(
                "beat stopping signal=%s after the current tick", self._stop_signals.received
            )
        super().close()

    @override
    def setup_schedule(self) -> None:
        # A stop as beat starts: beat exits once the schedule is set up, before its first
        # tick, out of Celery's loop (nothing to save yet).
        with self._finished_before_a_stop(stopping="as it starts: its schedule set up"):
            # Beat builds its scheduler before it sends beat_init: the settings are checked
            # before they are written into the schedule (or break it with a TypeError).
            check_before_start()
            # The dispatch entry as the settings say now: written only after migrate, a
            # changed interval (or queue) would wait for the next migrate.
            ensure_dispatch_schedule()
            super().setup_schedule()

    @override
    def all_as_schedule(self) -> dict[str, ScheduleEntry]:
        # Beat reloads its schedule at least every 5 minutes: an error raised here comes
        # out of tick(), which Celery takes as fatal, so PostgreSQL out of reach at that
        # mark ended beat for good. The schedule it runs is kept until the next reload.
        # Starting, beat has none to keep, and fails as on any database error then.
        try:
            schedule = self._read_schedule()
        except (DatabaseError, InterfaceError) as error:
            if self._schedule is None:
                raise
            logger.warning(
                "beat schedule reload failed entries_kept=%s error=%s: %s",
                len(self._schedule),
                type(error).__name__,
                refusals.first_line(error),
            )
            # Tried again RELOAD_RETRY_SECONDS later, not at the next forced reload 5
            # minutes away: a change read just before (a task an operator disabled)
            # would wait as long. Not at every tick: three reads of the schedule each.
            self._last_full_sync = datetime.now() - timedelta(  # noqa: DTZ005 - theirs, naive
                seconds=schedulers.SCHEDULE_SYNC_MAX_INTERVAL - RELOAD_RETRY_SECONDS
            )
            # Rebuilt from their models, which each run updates: an entry as loaded keeps
            # the last run it was read with, and one that ran since would be sent again.
            return {
                name: self.Entry(entry.model, app=self.app)
                for name, entry in self._schedule.items()
            }
        # Runs sync() could not save (PostgreSQL taking reads, not writes: a failover's
        # old primary) are read back older: kept as they ran, or sent again.
        loaded: dict[str, Any] = self._schedule or {}
        fresh: dict[str, Any] = schedule
        for name in self._dirty & fresh.keys() & loaded.keys():
            ran, read = loaded[name].model, fresh[name].model
            read.last_run_at, read.total_run_count = ran.last_run_at, ran.total_run_count
            fresh[name] = self.Entry(read, app=self.app)
        return schedule

    @override
    def sync(self) -> None:
        """django-celery-beat's, but an entry whose save a database error stopped stays
        to be saved: theirs took it off the list first and lost it, so its last run was
        never saved, the next reload read the run before, and the task was sent again."""
        unsavable: set[str] = set()
        with self._finished_before_a_stop():
            try:
                close_old_connections()
                while self._dirty:
                    name = next(iter(self._dirty))
                    try:
                        self._schedule[name].save()
                    except (KeyError, TypeError, ObjectDoesNotExist):
                        unsavable.add(name)  # tried again at the next sync, as theirs does
                    self._dirty.discard(name)
            except (DatabaseError, InterfaceError) as error:
                logger.warning(
                    "beat schedule save failed unsaved=%s error=%s: %s",
                    len(self._dirty),
                    type(error).__name__,
                    refusals.first_line(error),
                )
            finally:
                self._dirty |= unsavable

    def _read_schedule(self) -> dict[str, ScheduleEntry]:
        """django-celery-beat's schedule, the dispatch entry written back first if an
        operator changed it."""
        # Beat reloads its schedule as the entries change (and every 5 minutes): a
        # dispatch entry an operator disabled, deleted or rescheduled meanwhile would
        # dispatch nothing until beat's next start. It is written back.
        schedule: dict[str, ScheduleEntry] = super().all_as_schedule()
        changed = _changed_fields(schedule.get(DISPATCH_PERIODIC_TASK_NAME))
        if not changed:
            return schedule
        logger.warning(
            "dispatch entry changed fields=%s: written back as the settings say (set "
            "SCHEDULER_DISPATCH_INTERVAL_SECONDS to change its interval)",
            ",".join(changed),
        )
        try:
            ensure_dispatch_schedule()
        except DatabaseError:
            # Tried again at the next reload, in 5 minutes at most.
            logger.exception("dispatch entry not written back")
            return schedule
        return super().all_as_schedule()  # type: ignore[no-any-return]

    @override
    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        if entry.task != DISPATCH_TASK_NAME:
            super().apply_entry(entry, producer=producer)
            return
        # django-celery-beat closes obsolete database connections every loop.
        if self._dispatcher is None:
            # One per process: it keeps its SQS queue URLs and its recovery cadence.
            self._dispatcher = Dispatcher()
            check_at_start(process="beat")
        started = time.monotonic()
        try:
            with self._stop_signals.cut_short_here():
                self._dispatcher.run_once()
        except Exception:
            logger.exception("dispatch tick crashed in beat dispatcher=%s", self._dispatcher.name)
        self._tick_took = time.monotonic() - started

    @override
    def _when(
        self, entry: ScheduleEntry, next_time_to_run: float, *args: Any, **kwargs: Any
    ) -> float:
        # Celery times the next run from the end of this one, just after apply_entry: a
        # tick of a backlog, cut short at about one interval, was followed by an interval
        # of nothing (half scheduler_dispatch's rate). From its start, as that loop does.
        took, self._tick_took = self._tick_took, 0.0
        if next_time_to_run:
            next_time_to_run = max(0.0, next_time_to_run - took)
        when: float = super()._when(entry, next_time_to_run, *args, **kwargs)
        return when


@register()
def check_beat_scheduler(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when Celery beat would not run dispatcher ticks itself: it sends them through
    the job queue, or, reading no django-celery-beat schedule, runs none."""
    configured = current_app.conf.beat_scheduler
    if names_subclass(configured, DispatchingScheduler):
        if scheduler_settings.beat_times_aware():
            return []
        return [
            Error(
                "DJANGO_CELERY_BEAT_TZ_AWARE is False: django-celery-beat then saves the "
                "dispatch entry's last run as a naive UTC time, which Django reads in "
                "TIME_ZONE; west of UTC, beat would dispatch nothing for hours after its "
                "schedule is next saved.",
                hint="Remove DJANGO_CELERY_BEAT_TZ_AWARE (True by default).",
                id="scheduler.E042",
            )
        ]
    hint = f'Set CELERY_BEAT_SCHEDULER = "{DISPATCHING_SCHEDULER}" to run them in beat.'
    if names_subclass(configured, DatabaseScheduler):
        said = (
            "beat will send dispatcher ticks as tasks on the job queue, where they wait "
            "behind running jobs."
        )
    else:
        # The dispatch entry is a django-celery-beat row, which such a scheduler never reads.
        said = (
            "it reads no django-celery-beat schedule, so beat runs no dispatcher tick: jobs "
            "are sent to SQS only while `manage.py scheduler_dispatch` runs."
        )
    return [
        Warning(
            f"Celery's beat scheduler is {configured!r}: {said}", hint=hint, id="scheduler.W001"
        )
    ]
