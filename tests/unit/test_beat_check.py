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


def test_the_project_uses_it():
    assert check_beat_scheduler() == []
