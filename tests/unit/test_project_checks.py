"""The project settings the scheduler cannot work without: aware datetimes, the default
database, and queues addressed by their own names."""

import pytest
from celery import current_app
from django.test import override_settings

from scheduler.checks import check_database
from scheduler.worker.checks import check_broker_transport_options


class SchedulerElsewhere:
    """A router that sends the scheduler's tables to another database."""

    def db_for_read(self, model, **hints):
        return "jobs" if model._meta.app_label == "scheduler" else None

    db_for_write = db_for_read


def test_the_projects_settings_pass():
    assert check_database() == []
    assert check_broker_transport_options() == []


@override_settings(USE_TZ=False)
def test_naive_datetimes_are_an_error():
    # Without it, every dispatcher tick failed on naive and aware datetimes.
    [error] = check_database()
    assert error.id == "scheduler.E040"
    assert "USE_TZ" in error.msg


@override_settings(DATABASE_ROUTERS=[SchedulerElsewhere()])
def test_the_scheduler_routed_to_another_database_is_an_error():
    [error] = check_database()
    assert error.id == "scheduler.E041"
    assert "'jobs'" in error.msg


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("queue_name_prefix", "prod-"),
        ("predefined_queues", {"scheduler-jobs": {"url": "https://sqs.example/1/team-a"}}),
    ],
)
def test_queue_names_the_dispatcher_would_not_use_are_an_error(option, value):
    # The workers would poll other queues than the dispatcher sends to: no job would run.
    options = current_app.conf.broker_transport_options
    current_app.conf.broker_transport_options = {**options, option: value}
    try:
        [error] = check_broker_transport_options()
    finally:
        current_app.conf.broker_transport_options = options
    assert error.id == "scheduler.E022"
    assert option in error.msg
