"""scheduler.E020/E021: jobs run only through the scheduler's Celery Task class."""

from contextlib import contextmanager

from celery import Celery, Task, current_app

from scheduler.worker.checks import check_task_class
from scheduler.worker.task import SchedulerTask


@contextmanager
def current(app):
    previous = current_app._get_current_object()
    app.set_current()
    try:
        yield app
    finally:
        previous.set_current()


def test_the_projects_app_passes():
    assert check_task_class() == []


def test_an_app_without_the_scheduler_task_class_fails():
    with current(Celery("plain", set_as_current=False)):
        [error] = check_task_class()
    assert error.id == "scheduler.E020"
    assert "scheduler.worker.task:SchedulerTask" in error.msg + (error.hint or "")


def test_a_subclass_of_the_scheduler_task_class_is_fine():
    class Custom(SchedulerTask):
        pass

    with current(Celery("custom", task_cls=Custom, set_as_current=False)):
        assert check_task_class() == []


def test_a_task_that_opts_out_of_the_class_is_named():
    def plain() -> None:
        """A task with Celery's own base class."""

    app = Celery("mixed", task_cls=SchedulerTask, set_as_current=False)
    app.task(name="mixed.plain", base=Task)(plain)

    with current(app):
        [error] = check_task_class()
    assert error.id == "scheduler.E021"
    assert "mixed.plain" in error.msg
