"""The local SQS server: moto's answers, at a cost per request that does not grow with
the queue (its clock read the short way and once per scan, counts only when asked,
deletes by handle)."""

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws
from moto.core import utils
from moto.sqs.models import Message

from devtools import sqs_server


def test_now_is_moto_now():
    before = utils.unix_time()
    now = sqs_server._unix_time()
    after = utils.unix_time()
    assert before <= now <= after + 0.001
    assert abs(sqs_server._unix_time_millis() - time.time() * 1000) < 50


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)))
def test_a_given_moment_is_converted_as_moto_converts_it(moment):
    assert sqs_server._unix_time(moment) == utils.unix_time(moment)
    assert sqs_server._unix_time_millis(moment) == utils.unix_time_millis(moment)


def test_the_command_runs_this_module_on_loopback():
    command = sqs_server.command(9324)
    assert command[1:] == ["-m", "devtools.sqs_server", "-H", "127.0.0.1", "-p", "9324"]


@pytest.fixture
def sqs() -> Iterator[Any]:
    """An SQS client of moto in this process (no server, no network)."""
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto as the local server runs it, for this test only."""
    for owner, name, value in sqs_server.patches():
        monkeypatch.setattr(owner, name, value)


def _delete(sqs: Any, url: str, receipt_handle: str) -> str:
    """ "ok", or the error code SQS answers."""
    try:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt_handle)
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return "ok"


def _counts(sqs: Any, url: str) -> dict[str, str]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {name: value for name, value in attributes.items() if "NumberOfMessages" in name}


def _story() -> list[object]:
    """What SQS answers along a queue's life, on a moto of its own: sends, receives,
    deletes with live, old, deleted, foreign and made-up handles, and the counts."""
    with mock_aws():
        return _told(boto3.client("sqs", region_name="us-east-1"))


def _told(sqs: Any) -> list[object]:
    url = sqs.create_queue(QueueName="story")["QueueUrl"]
    other = sqs.create_queue(QueueName="other")["QueueUrl"]
    seen: list[object] = []
    for first in range(0, 30, 10):
        entries = [
            {"Id": str(n), "MessageBody": f"m{first + n}", "DelaySeconds": 600 if n < 3 else 0}
            for n in range(10)
        ]
        seen.append(len(sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]))
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)
    held = {message["Body"]: message["ReceiptHandle"] for message in received["Messages"]}
    seen += [sorted(held), _counts(sqs, url)]
    body, handle = next(iter(held.items()))
    seen += [
        body,
        _delete(sqs, url, handle),
        _delete(sqs, url, handle),
        _delete(sqs, url, "made-up"),
        _delete(sqs, other, list(held.values())[1]),
        _counts(sqs, url),
    ]
    # Received again, a message has a new handle: the old one still deletes it.
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=0)
    old = again["Messages"][0]["ReceiptHandle"]
    newer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)
    new = newer["Messages"][0]["ReceiptHandle"]
    seen += [
        again["Messages"][0]["Body"],
        newer["Messages"][0]["Body"],
        new != old,
        _delete(sqs, url, old),
        _delete(sqs, url, new),
        _counts(sqs, url),
    ]
    sqs.purge_queue(QueueUrl=url)
    seen += [
        _delete(sqs, url, list(held.values())[2]),
        _counts(sqs, url),
    ]
    return seen


def test_the_server_answers_as_moto_does(request):
    plain = _story()
    request.getfixturevalue("patched")
    assert _story() == plain
    assert plain[4] == {
        "ApproximateNumberOfMessages": "11",
        "ApproximateNumberOfMessagesDelayed": "9",
        "ApproximateNumberOfMessagesNotVisible": "10",
    }
    assert plain[6:10] == ["ok", "ok", "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid"]
    # Deleted by its old handle, then by its newer one: the second is accepted too.
    assert plain[13:16] == [True, "ok", "ok"]
    assert plain[16]["ApproximateNumberOfMessages"] == "10"
    assert plain[17:] == [
        "ReceiptHandleIsInvalid",
        {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesDelayed": "0",
            "ApproximateNumberOfMessagesNotVisible": "0",
        },
    ]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time moto asks a message whether it is visible, delayed, or ever had a
    receipt handle."""
    asked: list[str] = []
    for name in ("visible", "delayed"):
        question = getattr(Message, name)

        def ask(message: Message, question: property = question, name: str = name) -> bool:
            asked.append(name)
            return bool(question.fget(message))  # type: ignore[misc]

        monkeypatch.setattr(Message, name, property(ask))
    had = Message.had_receipt_handle

    def ask_handle(message: Message, receipt_handle: str) -> bool:
        asked.append("had_receipt_handle")
        return had(message, receipt_handle)

    monkeypatch.setattr(Message, "had_receipt_handle", ask_handle)
    return asked


@pytest.mark.parametrize("queued", [100, 2000])
def test_a_send_or_a_delete_asks_no_message_and_a_receive_only_those_it_takes(
    sqs, patched, reads, queued
):
    url = sqs.create_queue(QueueName="long")["QueueUrl"]
    for first in range(0, queued, 10):
        entries = [
            {"Id": str(n), "MessageBody": str(first + n), "DelaySeconds": 900} for n in range(10)
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    sqs.send_message(QueueUrl=url, MessageBody="due")
    reads.clear()

    entries = [{"Id": str(n), "MessageBody": "more", "DelaySeconds": 900} for n in range(10)]
    sqs.send_message_batch(QueueUrl=url, Entries=entries)
    sent, reads[:] = len(reads), []
    received = sqs.receive_message(QueueUrl=url, VisibilityTimeout=600)["Messages"]
    receive, reads[:] = len(reads), []
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"])
    delete = len(reads)

    assert [message["Body"] for message in received] == ["due"]
    assert (sent, receive, delete) == (0, 1, 0)
