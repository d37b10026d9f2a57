"""scheduler.W002: a worker keeps its database connection from task to task."""

from celery import Celery

from scheduler.worker.checks import check_connection_reuse
from tests.unit.test_task_class_check import current


def test_the_projects_app_reuses_connections():
    assert check_connection_reuse() == []


def test_an_app_that_reconnects_around_every_task_is_warned():
    with current(Celery("plain", set_as_current=False)):
        [warning] = check_connection_reuse()
    assert warning.id == "scheduler.W002"
    assert "CELERY_DB_REUSE_MAX" in warning.msg + (warning.hint or "")
