"""The dispatch schedule in django-celery-beat, and the scheduler_dispatch command."""

import json
import logging
import signal
import threading
import time
from datetime import timedelta
from io import StringIO

import psycopg2
import pytest
from celery import current_app
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import DEFAULT_DB_ALIAS, InterfaceError, InternalError, connection, transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from scheduler import schedule_at
from scheduler.apps import after_migrate
from scheduler.conf import scheduler_settings
from scheduler.dispatch import beat
from scheduler.dispatch.beat import (
    DISPATCH_PERIODIC_TASK_NAME,
    DispatchingScheduler,
    ensure_dispatch_schedule,
)
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import DispatcherHeartbeat, ScheduledJob
from scheduler.protocol import JOB_ID_HEADER
from scheduler.services import running
from scheduler.testing import InMemoryPublisher
from tests.conftest import connection_to_a_reader, postgresql_out_of_reach
from tests.factories import dispatch_one

pytestmark = pytest.mark.django_db


def test_migrate_creates_the_dispatch_periodic_task():
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    assert task.task == "scheduler.dispatch"
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (5, "seconds")
    assert task.expire_seconds == 5


def test_migrating_another_database_leaves_the_dispatch_schedule_alone():
    # A project's migrate --database=analytics sends post_migrate for every app: the
    # schedule lives where django-celery-beat's models are written, not there.
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).delete()
    scheduler_app = apps.get_app_config("scheduler")
    after_migrate(app_config=scheduler_app, using="analytics")
    assert not PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).exists()
    after_migrate(app_config=scheduler_app, using=DEFAULT_DB_ALIAS)
    assert PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).exists()


def test_the_schedule_follows_the_interval_setting_and_stays_unique(settings):
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 2
    settings.SCHEDULER_QUEUE_NAME = "other-queue"
    ensure_dispatch_schedule()
    ensure_dispatch_schedule()
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    assert task.interval.every == 2
    assert task.queue == "other-queue"
    assert PeriodicTask.objects.filter(task="scheduler.dispatch").count() == 1


def test_a_dispatch_entry_an_operator_disabled_runs_again_as_beat_starts():
    # Unticked "enabled" (or ticked "one-off") in the admin, it stopped every dispatch for
    # good: beat dropped the entry, and no restart or migrate brought it back.
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).update(
        enabled=False, one_off=True, start_time=timezone.now() + timedelta(days=1)
    )
    ensure_dispatch_schedule()
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    assert (task.enabled, task.one_off, task.start_time) == (True, False, None)


@pytest.mark.django_db(transaction=True)
def test_beats_and_migrates_writing_the_schedule_at_once_wait_for_each_other(settings):
    # Several replicas' migrate, or beat starting beside one: both found no entry, both
    # created it, and one failed ("Periodic task with this Name already exists") or
    # deadlocked on a new interval.
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 3
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).delete()
    with transaction.atomic():
        ensure_dispatch_schedule()
        other, outcome = _writing_in_a_thread()
        other.join(1)  # it runs meanwhile, up to where it waits for this transaction
        assert outcome == []
    other.join(10)
    assert outcome == ["written"]
    assert PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).count() == 1
    assert IntervalSchedule.objects.filter(every=3, period="seconds").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_writer_above_read_committed_sees_what_the_one_before_it_wrote(settings):
    # The lock, taken by the writes' transaction, came after its snapshot: at REPEATABLE
    # READ the second writer did not see the first one's entry, and failed on its name.
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 3
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).delete()
    db = connection.settings_dict
    first = psycopg2.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"])
    try:
        with first.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(hashtext('scheduler.dispatch'))")
        other, outcome = _writing_in_a_thread("REPEATABLE READ")
        other.join(1)  # it waits for the first writer
        with first, first.cursor() as cursor:  # the first writer's entry, committed
            cursor.execute(
                "INSERT INTO django_celery_beat_intervalschedule (every, period) "
                "VALUES (3, 'seconds') RETURNING id"
            )
            (interval,) = cursor.fetchone()
            cursor.execute(
                "INSERT INTO django_celery_beat_periodictask (name, task, interval_id, args, "
                "kwargs, enabled, total_run_count, date_changed, description, one_off, "
                "headers, priority, expire_seconds) VALUES (%s, 'scheduler.dispatch', %s, "
                "'[]', '{}', true, 0, now(), '', false, '{}', NULL, 3)",
                [DISPATCH_PERIODIC_TASK_NAME, interval],
            )
        with first.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtext('scheduler.dispatch'))")
        other.join(10)
    finally:
        first.close()
    assert outcome == ["written"]
    assert IntervalSchedule.objects.filter(every=3, period="seconds").count() == 1


def _writing_in_a_thread(isolation: str | None = None) -> tuple[threading.Thread, list[str]]:
    """A thread that writes the dispatch entry on its own connection (at ``isolation``),
    started, and the list its outcome goes to: "written", or the error."""
    outcome: list[str] = []

    def write() -> None:
        try:
            if isolation:
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {isolation}"
                    )
            ensure_dispatch_schedule()
            outcome.append("written")
        except Exception as error:
            outcome.append(repr(error))
        finally:
            connection.close()

    thread = threading.Thread(target=write)
    thread.start()
    return thread, outcome


def test_an_interval_an_operator_also_added_does_not_stop_the_schedule():
    # IntervalSchedule has no unique key: a second "every 5 seconds" (the admin, two
    # beats starting) made get_or_create fail, and beat with it at every start.
    IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    task = ensure_dispatch_schedule()
    assert (task.interval.every, task.interval.period) == (5, "seconds")


def test_a_fractional_interval_is_kept_to_the_microsecond(settings):
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 0.5
    ensure_dispatch_schedule()
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    assert (task.interval.every, task.interval.period) == (500_000, "microseconds")
    assert task.interval.schedule.run_every == timedelta(seconds=0.5)
    assert task.expire_seconds == 1  # whole seconds only: the interval rounded up


def test_beat_starts_with_the_interval_setting_not_the_one_of_the_last_migrate(
    settings, transactional_db
):
    # The schedule was written only after migrate: beat restarted with a new interval
    # ticked at the old one (and the monitoring page, reading the setting, called it
    # silent) until the next migrate.
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 2
    scheduler = DispatchingScheduler(app=current_app)
    scheduler._finalize.cancel()
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    assert (task.interval.every, task.interval.period) == (2, "seconds")
    [entry] = [e for e in scheduler.schedule.values() if e.task == "scheduler.dispatch"]
    assert entry.schedule.run_every == timedelta(seconds=2)


@pytest.fixture
def beat_scheduler(transactional_db):
    ensure_dispatch_schedule()
    scheduler = DispatchingScheduler(app=current_app)
    yield scheduler
    scheduler._finalize.cancel()  # no sync at exit, after the test database is gone


@pytest.mark.parametrize(
    "change",
    [
        {"enabled": False},
        {"one_off": True, "start_time": timezone.now() + timedelta(days=1)},
        None,  # deleted
    ],
)
def test_a_dispatch_entry_an_operator_changes_while_beat_runs_is_written_back(
    beat_scheduler, change, caplog
):
    # Beat reloads its schedule when an entry changes: the dispatch entry disabled,
    # deleted or rescheduled in the admin left beat dispatching nothing until restarted.
    assert DISPATCH_PERIODIC_TASK_NAME in beat_scheduler.schedule
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    if change is None:
        task.delete()
    else:
        for name, value in change.items():
            setattr(task, name, value)
        task.save()  # as the admin saves it: beat sees the change
    entry = beat_scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME]
    assert entry.model.enabled
    assert not entry.model.one_off
    assert (entry.model.start_time, entry.model.expires) == (None, None)
    assert PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME, enabled=True).count() == 1
    assert "dispatch entry changed fields=" in caplog.text


def test_a_dispatch_entry_with_another_interval_is_written_back(beat_scheduler):
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    task.interval = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    task.save()
    entry = beat_scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME]
    assert entry.schedule.run_every == timedelta(
        seconds=scheduler_settings.DISPATCH_INTERVAL_SECONDS
    )


def test_a_dispatch_entry_that_cannot_be_written_back_leaves_beat_running(
    beat_scheduler, monkeypatch, caplog
):
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).get().delete()

    def read_only() -> None:
        raise InternalError("cannot execute UPDATE in a read-only transaction")

    monkeypatch.setattr(beat, "ensure_dispatch_schedule", read_only)
    assert DISPATCH_PERIODIC_TASK_NAME not in beat_scheduler.schedule  # and beat goes on
    assert "dispatch entry not written back" in caplog.text


def test_a_dispatch_entry_as_the_settings_say_is_not_written_at_each_reload(beat_scheduler):
    # Writing it marks the schedule changed: written when unchanged, beat would reload
    # its schedule, and write the entry again, at every loop.
    beat_scheduler.schedule  # noqa: B018 - the first read
    written = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME).date_changed
    beat_scheduler._last_full_sync -= timedelta(minutes=10)  # a forced reload is due
    assert DISPATCH_PERIODIC_TASK_NAME in beat_scheduler.schedule
    assert PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME).date_changed == written
    assert not beat_scheduler.schedule_changed()


def test_a_schedule_reload_postgresql_cannot_answer_leaves_beat_running(beat_scheduler, caplog):
    # Beat reloads its schedule every 5 minutes: PostgreSQL out of reach at that mark, the
    # reload's OperationalError came out of tick(), which Celery takes as fatal ("beat
    # raised exception"), and beat exited for good.
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).update(
        last_run_at=timezone.now() - timedelta(hours=1)
    )
    beat_scheduler._last_full_sync -= timedelta(minutes=5)  # a reload is due
    beat_scheduler.__dict__["producer"] = None  # no broker: the tick sends nothing through it
    beat_scheduler._dispatcher = Dispatcher(publisher=InMemoryPublisher())
    assert beat_scheduler.tick() == 0  # the dispatch tick, due an hour ago, ran
    loaded = beat_scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME].model
    beat_scheduler._last_full_sync -= timedelta(minutes=5)
    with postgresql_out_of_reach():
        # The next tick an interval away: the schedule kept is as it is now, not as it
        # was loaded (its dispatch entry last run an hour ago, due at once).
        assert beat_scheduler.tick() > 1
        assert beat_scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME].model is loaded
    [failed] = [
        r for r in caplog.records if r.name == beat.logger.name and "reload" in r.getMessage()
    ]
    kept = len(beat_scheduler.schedule)
    assert failed.getMessage().startswith(
        f"beat schedule reload failed entries_kept={kept} error=OperationalError: connection "
    )
    assert failed.getMessage().endswith("Connection refused")  # its first line only
    beat_scheduler._last_full_sync -= timedelta(minutes=5)  # PostgreSQL back: reloaded
    assert beat_scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME].model is not loaded


def test_a_reload_keeps_the_schedule_on_an_interface_error_not_on_a_bug(
    beat_scheduler, monkeypatch
):
    # InterfaceError ("connection already closed") is no DatabaseError.
    beat_scheduler.schedule  # noqa: B018 - the first read

    def failing(error: Exception) -> None:
        def all_as_schedule(self: DatabaseScheduler) -> None:
            raise error

        monkeypatch.setattr(DatabaseScheduler, "all_as_schedule", all_as_schedule)
        beat_scheduler._last_full_sync -= timedelta(minutes=5)

    failing(InterfaceError("connection already closed"))
    assert DISPATCH_PERIODIC_TASK_NAME in beat_scheduler.schedule
    failing(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        beat_scheduler.schedule  # noqa: B018 - the reload


def _hourly_task() -> PeriodicTask:
    """A periodic task of an operator's, every hour, last run an hour ago: due."""
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)
    return PeriodicTask.objects.create(
        name="hourly report",
        task="testapp.noop",
        interval=every,
        last_run_at=timezone.now() - timedelta(hours=1, minutes=1),
    )


def test_a_change_read_as_the_reload_failed_is_read_again_seconds_later(
    beat_scheduler, monkeypatch
):
    # The change was taken as read: the schedule kept ran a task an operator had
    # disabled until the forced reload, 5 minutes later. Nor is the reload tried again
    # at each read of the schedule (three a tick) while PostgreSQL keeps failing it.
    task = _hourly_task()
    assert "hourly report" in beat_scheduler.schedule
    task.enabled = False
    task.save()
    read = beat.DispatchingScheduler._read_schedule
    reads: list[bool] = []

    def failing_once(self: beat.DispatchingScheduler) -> dict:
        reads.append(True)
        monkeypatch.setattr(beat.DispatchingScheduler, "_read_schedule", read)
        raise InterfaceError("connection already closed")

    monkeypatch.setattr(beat.DispatchingScheduler, "_read_schedule", failing_once)
    assert "hourly report" in beat_scheduler.schedule  # kept
    monkeypatch.setattr(beat.DispatchingScheduler, "_read_schedule", failing_once)
    for _ in range(3):
        assert "hourly report" in beat_scheduler.schedule
    assert reads == [True]
    monkeypatch.setattr(beat.DispatchingScheduler, "_read_schedule", read)
    beat_scheduler._last_full_sync -= timedelta(seconds=beat.RELOAD_RETRY_SECONDS)
    assert "hourly report" not in beat_scheduler.schedule


@pytest.mark.parametrize("refused", ["reads and writes", "writes"])
def test_a_run_whose_save_postgresql_refused_is_kept_through_a_reload(beat_scheduler, refused):
    # django-celery-beat's sync() took the entry off its list to save, then lost it to
    # the database error; and a reload that read the run before (PostgreSQL taking
    # reads, not writes: a failover's old primary) replaced it. The task was sent again.
    _hourly_task()
    entry = beat_scheduler.schedule["hourly report"]
    ran_at = beat_scheduler.reserve(entry).last_run_at  # sent, as tick() does: now
    beat_scheduler._last_full_sync -= timedelta(minutes=5)
    out = postgresql_out_of_reach if refused == "reads and writes" else connection_to_a_reader
    with out():
        assert beat_scheduler.schedule["hourly report"].last_run_at == ran_at
    beat_scheduler._last_full_sync -= timedelta(minutes=5)  # PostgreSQL back: reloaded
    assert beat_scheduler.schedule["hourly report"].last_run_at == ran_at
    assert not beat_scheduler.schedule["hourly report"].is_due().is_due
    assert PeriodicTask.objects.get(name="hourly report").last_run_at == ran_at


def _stop_signal_in_saves(scheduler: DispatchingScheduler, monkeypatch) -> None:
    """SIGTERM lands in each save of an entry of ``scheduler``'s (its handler called as
    Python calls it, between two statements)."""
    save = beat._Entry.save

    def stopped_while_saving(entry: beat._Entry) -> None:
        scheduler._stop_signals._handle(signal.SIGTERM, None)
        save(entry)

    monkeypatch.setattr(beat._Entry, "save", stopped_while_saving)


def test_a_stop_during_a_save_between_ticks_exits_once_it_is_saved(beat_scheduler, monkeypatch):
    _hourly_task()
    ran_at = beat_scheduler.reserve(beat_scheduler.schedule["hourly report"]).last_run_at
    _stop_signal_in_saves(beat_scheduler, monkeypatch)
    with pytest.raises(SystemExit):
        beat_scheduler.sync()
    assert PeriodicTask.objects.get(name="hourly report").last_run_at == ran_at


def test_a_stop_during_the_save_as_beat_exits_lets_it_exit(beat_scheduler, monkeypatch):
    # Beat saves its schedule as it exits, whatever ended it: a stop signal then raises
    # nothing (it would replace the error that ended beat), and the save goes on.
    _hourly_task()
    ran_at = beat_scheduler.reserve(beat_scheduler.schedule["hourly report"]).last_run_at
    _stop_signal_in_saves(beat_scheduler, monkeypatch)
    beat_scheduler.close()
    assert PeriodicTask.objects.get(name="hourly report").last_run_at == ran_at


def test_beat_runs_a_dispatcher_tick_in_its_own_process(sqs_queue, beat_scheduler):
    job = schedule_at("testapp.noop", timezone.now())
    entry = beat_scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME]
    beat_scheduler.apply_entry(entry, producer=None)
    job.refresh_from_db()
    assert job.status == "enqueued"
    # The only message is the job's own: no tick message went through the job queue.
    [message] = sqs_queue.receive()
    assert message["headers"]["task"] == "testapp.noop"
    assert message["headers"][JOB_ID_HEADER] == str(job.pk)
    assert DispatcherHeartbeat.objects.get().jobs_sent == 1


def test_the_next_tick_is_due_an_interval_after_the_last_one_started(beat_scheduler, monkeypatch):
    # Celery counted it from the tick's end: a tick of a backlog, cut short at about one
    # interval, was followed by an interval of nothing, and beat sent a backlog at half
    # the rate scheduler_dispatch does.
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).update(
        last_run_at=timezone.now() - timedelta(hours=1)
    )
    monkeypatch.setattr(Dispatcher, "run_once", lambda self: time.sleep(2))
    scheduler = DispatchingScheduler(app=current_app)
    scheduler.__dict__["producer"] = None  # no broker: the tick sends nothing through it
    try:
        started = time.time()
        assert scheduler.tick() == 0  # it ran the tick
        [due_at] = [event[0] for event in scheduler._heap if event[2].task == "scheduler.dispatch"]
    finally:
        scheduler._finalize.cancel()
    assert due_at == pytest.approx(started + 5, abs=0.5)  # the interval is 5 s


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=10)])
def test_beat_dispatches_although_the_last_tick_was_stamped_by_a_clock_ahead(beat_scheduler, skew):
    # The last run saved by a beat whose clock was ahead (since stepped back by NTP, or
    # another host's): beat sent nothing, due jobs and recovery included, until then.
    job = schedule_at("testapp.noop", timezone.now())
    PeriodicTask.objects.filter(name=DISPATCH_PERIODIC_TASK_NAME).update(
        last_run_at=timezone.now() + skew
    )
    scheduler = DispatchingScheduler(app=current_app)
    scheduler.__dict__["producer"] = None  # no broker: the tick sends nothing through it
    scheduler._dispatcher = Dispatcher(publisher=InMemoryPublisher(), judge_leases_at_once=True)
    try:
        assert scheduler.tick() == 0  # it ran the tick
    finally:
        scheduler._finalize.cancel()
    job.refresh_from_db()
    assert job.status == "enqueued"


def test_a_failing_tick_does_not_stop_beat(sqs_queue, beat_scheduler, settings, caplog):
    schedule_at("testapp.noop", timezone.now())
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens there
    entry = beat_scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME]
    beat_scheduler.apply_entry(entry, producer=None)
    assert ScheduledJob.objects.get().status == "scheduled"
    assert f"sqs publish failed queue={sqs_queue.name} unsent=1 " in caplog.text


def test_dispatch_command_once_sends_due_jobs(sqs_queue, caplog):
    due = schedule_at("testapp.noop", timezone.now() + timedelta(seconds=2))
    later = schedule_at("testapp.noop", timezone.now() + timedelta(days=1))
    out = StringIO()
    caplog.set_level(logging.INFO, logger="scheduler.clock")
    call_command("scheduler_dispatch", "--once", stdout=out)
    assert json.loads(out.getvalue())["sent"] == 1
    # As every process does as it starts (README "Clocks"), the loop and once alike.
    assert "clock offset process=dispatcher seconds=" in caplog.text
    statuses = dict(ScheduledJob.objects.values_list("pk", "status"))
    assert statuses == {due.pk: "enqueued", later.pk: "scheduled"}


def test_dispatch_command_once_judges_leases_only_when_told(sqs_queue):
    # Run as PostgreSQL came back from an outage longer than a lease (an operator's
    # "recover now"), the tick retried every running job at once: their workers had not
    # beaten yet, and each job ran twice at the same time. Told, it judges them.
    job = schedule_at("testapp.noop", timezone.now())
    token = dispatch_one(job, now=timezone.now())
    claimed = running.claim(job_id=job.pk, task_name=job.task_name, token=token, worker="w")
    assert isinstance(claimed, running.Claim)
    ScheduledJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=2)
    )
    out = StringIO()
    call_command("scheduler_dispatch", "--once", stdout=out)
    assert json.loads(out.getvalue())["leases_expired"] == 0
    assert ScheduledJob.objects.get(pk=job.pk).status == "running"
    out = StringIO()
    call_command("scheduler_dispatch", "--once", "--judge-leases", stdout=out)
    assert json.loads(out.getvalue())["leases_expired"] == 1
    job.refresh_from_db()
    assert job.last_error.startswith("lease expired")
    with pytest.raises(CommandError, match="--judge-leases goes with --once"):
        call_command("scheduler_dispatch", "--judge-leases")


def test_dispatch_command_once_fails_when_sqs_is_down(sqs_queue, settings):
    schedule_at("testapp.noop", timezone.now())
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"
    with pytest.raises(SystemExit) as exit_info:
        call_command("scheduler_dispatch", "--once", stdout=StringIO())
    assert exit_info.value.code == 1
    assert ScheduledJob.objects.get().status == "scheduled"
