"""scheduler.W020/W021: the worker's SQS transport and consumer are the scheduler's."""

import pytest
from celery import current_app

from scheduler.worker.checks import check_broker_transport, check_worker_consumer


def test_the_project_uses_both():
    assert check_broker_transport() == []
    assert check_worker_consumer() == []


@pytest.mark.parametrize("configured", [None, "sqs", "kombu.transport.SQS:Transport"])
def test_kombus_sqs_transport_is_a_warning(monkeypatch, configured):
    monkeypatch.setitem(current_app.conf, "broker_url", "sqs://local:local@127.0.0.1:9")
    monkeypatch.setitem(current_app.conf, "broker_transport", configured)
    [warning] = check_broker_transport()
    assert warning.id == "scheduler.W020"
    assert "kombu.transport.SQS.Transport" in warning.msg
    assert 'CELERY_BROKER_TRANSPORT = "scheduler.worker.transport:Transport"' in warning.hint


@pytest.mark.parametrize(
    ("url", "configured"),
    [
        ("sqs://", "scheduler.worker.transport:Transport"),
        ("memory://", None),  # not SQS: none of the transport's business
        ("sqs://", "no.such.module:Transport"),  # Celery reports it
    ],
)
def test_other_transports_pass(monkeypatch, url, configured):
    monkeypatch.setitem(current_app.conf, "broker_url", url)
    monkeypatch.setitem(current_app.conf, "broker_transport", configured)
    assert check_broker_transport() == []


@pytest.mark.parametrize(
    "configured", ["celery.worker.consumer:Consumer", "no.such.module:Consumer"]
)
def test_another_consumer_is_a_warning(monkeypatch, configured):
    monkeypatch.setitem(current_app.conf, "worker_consumer", configured)
    [warning] = check_worker_consumer()
    assert warning.id == "scheduler.W021"
    assert configured in warning.msg
    assert 'CELERY_WORKER_CONSUMER = "scheduler.worker.consumer:Consumer"' in warning.hint
