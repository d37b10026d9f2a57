"""The project settings the scheduler cannot work without: aware datetimes, the default
database, and queues addressed by their own names."""

import pytest
from botocore.config import Config
from celery import current_app
from django.test import override_settings

from scheduler.checks import check_database
from scheduler.worker.checks import (
    check_broker_sqs_location,
    check_broker_timings,
    check_broker_transport_options,
)


class SchedulerElsewhere:
    """A router that sends the scheduler's tables to another database."""

    def db_for_read(self, model, **hints):
        return "jobs" if model._meta.app_label == "scheduler" else None

    db_for_write = db_for_read


def test_the_projects_settings_pass(settings, monkeypatch):
    # As the project sets them without SQS_ENDPOINT_URL (offline_sqs points both away).
    settings.SCHEDULER_SQS_ENDPOINT_URL = None
    monkeypatch.setattr(current_app.conf, "broker_url", "sqs://")
    assert check_database() == []
    assert check_broker_transport_options() == []
    assert check_broker_timings() == []
    assert check_broker_sqs_location() == []


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


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("visibility_timeout", None, "unset (kombu: 1800)"),
        ("visibility_timeout", 60, "60"),
        ("wait_time_seconds", 0, "0"),
    ],
)
def test_worker_timings_other_than_the_queues_are_a_warning(option, value, said):
    # A queue a worker creates would hold messages for kombu's half hour, not the
    # scheduler's visibility timeout; a worker would not long-poll as the queue says.
    options = current_app.conf.broker_transport_options
    changed = {key: given for key, given in options.items() if key != option}
    if value is not None:
        changed[option] = value
    current_app.conf.broker_transport_options = changed
    try:
        [warning] = check_broker_timings()
    finally:
        current_app.conf.broker_transport_options = options
    assert warning.id == "scheduler.W023"
    assert f"[{option!r}] is {said}, not SCHEDULER_SQS_" in warning.msg


def test_worker_timings_of_another_broker_are_not_checked():
    conf = current_app.conf
    transport, options = conf.broker_transport, conf.broker_transport_options
    conf.broker_transport, conf.broker_transport_options = "memory", {}
    try:
        assert check_broker_timings() == []
    finally:
        conf.broker_transport, conf.broker_transport_options = transport, options


def test_the_workers_sqs_calls_give_up_on_a_silent_sqs_within_a_minute():
    # kombu's own client waits botocore's 60 s to connect and 60 s to read, and tries
    # again: an ack (on the worker's event loop) to an SQS that took the connection and
    # never answered held every job the worker had received for minutes.
    options = current_app.conf.broker_transport_options
    config = Config(**options["client-config"])
    attempts = config.retries["total_max_attempts"]
    assert attempts * (config.connect_timeout + config.read_timeout) <= 60
    # Not shorter than a long poll: a worker without the event loop (--pool=solo)
    # receives through this client.
    assert config.read_timeout > options["wait_time_seconds"]


@pytest.mark.parametrize(
    ("broker", "region", "said"),
    [
        # A reusable app's user who set Celery's region and left the scheduler's.
        ({"region": "eu-west-1"}, "us-east-1", "in region 'eu-west-1'"),
        # Celery's broker on an emulator, the dispatcher on AWS (or the other way).
        ({"url": "sqs://local:local@127.0.0.1:9324"}, None, "at 127.0.0.1:9324"),
        ({"url": "sqs://", "endpoint": "http://127.0.0.1:9324"}, None, "at AWS's endpoint"),
    ],
)
def test_workers_polling_another_region_or_endpoint_than_the_dispatcher_is_an_error(
    broker, region, said, settings
):
    # The dispatcher's sends went to a queue no worker polled: every job stayed enqueued.
    settings.SCHEDULER_SQS_ENDPOINT_URL = broker.get("endpoint")
    if region:
        settings.SCHEDULER_SQS_REGION = region
    conf = current_app.conf
    options, url = conf.broker_transport_options, conf.broker_url
    conf.broker_transport_options = {
        **options,
        "region": broker.get("region", region or "us-east-1"),
    }
    conf.broker_url = broker.get("url", "sqs://")
    try:
        [error] = check_broker_sqs_location()
    finally:
        conf.broker_transport_options, conf.broker_url = options, url
    assert error.id == "scheduler.E025"
    assert said in error.msg


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://sqs.us-east-1.amazonaws.com",
        "https://sqs-fips.us-east-1.amazonaws.com",
        "https://vpce-0a1b2c3d-4e5f6a7b.sqs.us-east-1.vpce.amazonaws.com",
    ],
)
def test_any_aws_endpoint_of_the_region_is_where_the_workers_poll(endpoint, settings):
    # (Of another region, it is not: see the test below.)
    # Every AWS endpoint of a region reaches its queues: the regional one named for the
    # dispatcher, the workers on the default (an IAM role's "sqs://") is no mismatch.
    settings.SCHEDULER_SQS_ENDPOINT_URL = endpoint
    settings.SCHEDULER_SQS_REGION = "us-east-1"
    conf = current_app.conf
    options, url = conf.broker_transport_options, conf.broker_url
    conf.broker_transport_options, conf.broker_url = {**options, "region": "us-east-1"}, "sqs://"
    try:
        assert check_broker_sqs_location() == []
    finally:
        conf.broker_transport_options, conf.broker_url = options, url


def test_an_aws_endpoint_of_another_region_than_the_workers_is_an_error(settings):
    settings.SCHEDULER_SQS_ENDPOINT_URL = "https://sqs.eu-west-1.amazonaws.com"
    settings.SCHEDULER_SQS_REGION = None
    conf = current_app.conf
    options, url = conf.broker_transport_options, conf.broker_url
    conf.broker_transport_options = {key: v for key, v in options.items() if key != "region"}
    conf.broker_url = "sqs://@sqs.us-east-1.amazonaws.com"
    try:
        [error] = check_broker_sqs_location()
    finally:
        conf.broker_transport_options, conf.broker_url = options, url
    assert error.id == "scheduler.E025"
    assert "sqs.eu-west-1.amazonaws.com" in error.msg


@pytest.mark.parametrize(
    ("broker_host", "endpoint_host"),
    [("localhost", "127.0.0.1"), ("127.0.0.1", "localhost"), ("[::1]", "localhost")],
)
def test_the_loopback_server_under_another_name_is_where_the_workers_poll(
    broker_host, endpoint_host, settings
):
    # localhost and 127.0.0.1 were two servers: "no job would run", and the worker
    # refused to start against the one SQS server it shared with the dispatcher.
    settings.SCHEDULER_SQS_ENDPOINT_URL = f"http://{endpoint_host}:9324"
    conf = current_app.conf
    url = conf.broker_url
    conf.broker_url = f"sqs://local:local@{broker_host}:9324"
    try:
        assert check_broker_sqs_location() == []
    finally:
        conf.broker_url = url


def test_loopback_at_another_port_is_another_server(settings):
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9324"
    conf = current_app.conf
    url = conf.broker_url
    conf.broker_url = "sqs://local:local@localhost:9325"
    try:
        [error] = check_broker_sqs_location()
    finally:
        conf.broker_url = url
    assert error.id == "scheduler.E025"
    assert "localhost:9325" in error.msg
