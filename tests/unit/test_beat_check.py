"""The warning when Celery beat would send dispatcher ticks through the job queue."""

import pytest
from celery import current_app

from scheduler.dispatch.beat import check_beat_scheduler


@pytest.mark.parametrize(
    "scheduler",
    [
        "scheduler.dispatch.beat:DispatchingScheduler",
        "scheduler.dispatch.beat.DispatchingScheduler",
    ],
)
def test_the_dispatching_scheduler_passes(monkeypatch, scheduler):
    monkeypatch.setitem(current_app.conf, "beat_scheduler", scheduler)
    assert check_beat_scheduler() == []


@pytest.mark.parametrize(
    "scheduler",
    [
        "django_celery_beat.schedulers:DatabaseScheduler",
        "celery.beat:PersistentScheduler",
        "no.such.module:Scheduler",
    ],
)
def test_another_beat_scheduler_is_a_warning(monkeypatch, scheduler):
    monkeypatch.setitem(current_app.conf, "beat_scheduler", scheduler)
    [warning] = check_beat_scheduler()
    assert warning.id == "scheduler.W001"
    assert scheduler in warning.msg
    assert "scheduler.dispatch.beat:DispatchingScheduler" in warning.hint


def test_a_database_scheduler_sends_ticks_through_the_job_queue(monkeypatch):
    monkeypatch.setitem(
        current_app.conf, "beat_scheduler", "django_celery_beat.schedulers:DatabaseScheduler"
    )
    [warning] = check_beat_scheduler()
    assert "dispatcher ticks as tasks on the job queue" in warning.msg


@pytest.mark.parametrize("scheduler", ["celery.beat:PersistentScheduler", "no.such.module:S"])
def test_a_scheduler_that_reads_no_periodic_task_row_runs_no_tick(monkeypatch, scheduler):
    # Celery's own keeps beat_schedule only: the dispatch entry is a django-celery-beat
    # row, so beat ran no tick and no job was ever sent, while the warning said ticks
    # would wait in the job queue.
    monkeypatch.setitem(current_app.conf, "beat_scheduler", scheduler)
    [warning] = check_beat_scheduler()
    assert "beat runs no dispatcher tick" in warning.msg
    assert "scheduler_dispatch" in warning.msg


def test_the_project_uses_it():
    assert check_beat_scheduler() == []


def test_naive_beat_times_are_an_error(settings):
    # django-celery-beat then saves a naive UTC last_run_at, which Django reads in
    # TIME_ZONE: west of UTC, the dispatch entry was not due again for hours.
    settings.DJANGO_CELERY_BEAT_TZ_AWARE = False
    [error] = check_beat_scheduler()
    assert error.id == "scheduler.E042"
    assert "DJANGO_CELERY_BEAT_TZ_AWARE" in error.msg
