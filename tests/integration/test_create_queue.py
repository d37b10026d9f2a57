"""`scheduler_create_queue` against the SQS server: one queue, a DLQ, the same on a rerun."""

import io
import json
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from scheduler.dispatch.queues import DLQ_RETENTION_SECONDS
from scheduler.queue_needs import MAX_RECEIVE_COUNT, MESSAGE_RETENTION_SECONDS
from tests.conftest import sqs_client


@pytest.fixture
def queue_name(sqs_endpoint: str, settings: Any) -> str:
    name = f"create-{uuid.uuid4().hex[:12]}"
    settings.SCHEDULER_SQS_ENDPOINT_URL = sqs_endpoint
    settings.SCHEDULER_QUEUE_NAME = name
    return name


@pytest.fixture
def client(sqs_endpoint: str) -> Any:
    return sqs_client(sqs_endpoint)


def attributes(client: Any, name: str) -> dict[str, str]:
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    result: dict[str, str] = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return result


def test_creates_queue_and_dead_letter_queue_idempotently(
    queue_name: str, client: Any, settings: Any
) -> None:
    out = io.StringIO()
    call_command("scheduler_create_queue", stdout=out)
    # A changed setting is applied by the second run instead of failing on the name.
    settings.SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS = 600
    call_command("scheduler_create_queue", stdout=out)

    names = [
        url.rsplit("/", 1)[-1]
        for url in client.list_queues(QueueNamePrefix=queue_name)["QueueUrls"]
    ]
    assert sorted(names) == [queue_name, f"{queue_name}-dlq"]

    main, dlq = attributes(client, queue_name), attributes(client, f"{queue_name}-dlq")
    assert main["VisibilityTimeout"] == "600"
    assert main["ReceiveMessageWaitTimeSeconds"] == str(
        settings.CELERY_BROKER_TRANSPORT_OPTIONS["wait_time_seconds"]
    )
    assert main["MessageRetentionPeriod"] == str(MESSAGE_RETENTION_SECONDS)
    assert main["DelaySeconds"] == "0"
    assert json.loads(main["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    }
    assert dlq["MessageRetentionPeriod"] == str(DLQ_RETENTION_SECONDS)
    assert "RedrivePolicy" not in dlq
    assert f"queue url={client.get_queue_url(QueueName=queue_name)['QueueUrl']}" in out.getvalue()


def test_rejects_a_name_sqs_would_refuse(queue_name: str) -> None:
    with pytest.raises(CommandError, match="not a valid SQS queue name"):
        call_command("scheduler_create_queue", "--name", "no spaces allowed")


def test_sqs_out_of_reach_is_one_clear_line(settings: Any) -> None:
    # The operator's one deploy step ended in a 40-line botocore traceback.
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"
    with pytest.raises(CommandError, match=r"SQS refused or could not be reached.*127\.0\.0\.1:9"):
        call_command("scheduler_create_queue", "--name", f"create-{uuid.uuid4().hex[:12]}")


def test_an_empty_name_is_refused_not_read_as_the_default(queue_name: str, client: Any) -> None:
    with pytest.raises(CommandError, match="--name"):
        call_command("scheduler_create_queue", "--name", "")
    assert not client.list_queues(QueueNamePrefix=queue_name).get("QueueUrls")


def create(client: Any, name: str, **attributes: str) -> str:
    url: str = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def arn(client: Any, name: str) -> str:
    return attributes(client, name)["QueueArn"]


def redrive_policy(client: Any, dead_letters: str, receives: int) -> str:
    """A RedrivePolicy sending to the queue ``dead_letters`` after ``receives``."""
    target = arn(client, dead_letters)
    return json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": str(receives)})


def test_an_existing_queue_keeps_its_longer_timings_and_its_own_dead_letter_queue(
    queue_name: str, client: Any
) -> None:
    # Run on Celery's default queue (as README told drop-in users), the command cut its
    # retention to a day and its visibility timeout to 300 s (a late-acknowledged task
    # then ran twice) and replaced its dead-letter queue and maxReceiveCount, silently.
    create(client, f"{queue_name}-own")
    policy = redrive_policy(client, f"{queue_name}-own", 20)
    create(
        client,
        queue_name,
        MessageRetentionPeriod="1209600",
        VisibilityTimeout="3600",
        DelaySeconds="5",
        RedrivePolicy=policy,
    )
    before = attributes(client, queue_name)

    out, err = io.StringIO(), io.StringIO()
    call_command("scheduler_create_queue", stdout=out, stderr=err)

    after = attributes(client, queue_name)
    for key in ("MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds", "RedrivePolicy"):
        assert after[key] == before[key]
    # Its dead letters go to its own queue: no <name>-dlq, which nothing would fill.
    names = client.list_queues(QueueNamePrefix=queue_name)["QueueUrls"]
    assert sorted(url.rsplit("/", 1)[-1] for url in names) == [queue_name, f"{queue_name}-own"]
    said = out.getvalue()
    assert "VisibilityTimeout=3600 kept (longer than 300)" in said
    assert "MessageRetentionPeriod=1209600 kept" in said
    assert f"{queue_name}-own" in said
    assert f"{queue_name}-dlq" in err.getvalue()  # monitoring watches that one

    # Idempotent: a second run changes nothing.
    out = io.StringIO()
    call_command("scheduler_create_queue", stdout=out, stderr=io.StringIO())
    assert attributes(client, queue_name) == after
    assert "changed" not in out.getvalue()


def test_an_existing_queue_below_what_jobs_need_is_raised_and_given_a_dead_letter_queue(
    queue_name: str, client: Any
) -> None:
    create(client, queue_name, MessageRetentionPeriod="3600", VisibilityTimeout="30")
    out = io.StringIO()
    call_command("scheduler_create_queue", stdout=out)

    main, dlq = attributes(client, queue_name), attributes(client, f"{queue_name}-dlq")
    assert main["VisibilityTimeout"] == "300"
    assert main["MessageRetentionPeriod"] == str(MESSAGE_RETENTION_SECONDS)
    assert json.loads(main["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    }
    said = out.getvalue()
    assert "VisibilityTimeout 30 changed to 300" in said
    assert f"MessageRetentionPeriod 3600 changed to {MESSAGE_RETENTION_SECONDS}" in said
    assert f"created {queue_name}-dlq" in said


def test_a_kept_dead_letter_policy_that_leaves_no_receive_for_a_handed_back_job_warns(
    queue_name: str, client: Any
) -> None:
    create(client, f"{queue_name}-dlq")
    policy = redrive_policy(client, f"{queue_name}-dlq", 2)
    create(client, queue_name, RedrivePolicy=policy)
    err = io.StringIO()
    call_command("scheduler_create_queue", stdout=io.StringIO(), stderr=err)

    assert json.loads(attributes(client, queue_name)["RedrivePolicy"])["maxReceiveCount"] == 2
    assert "RedrivePolicy.maxReceiveCount=2, jobs need >=3" in err.getvalue()
    assert "handed back" in err.getvalue()


def test_a_dead_letter_queue_name_is_refused(queue_name: str, client: Any) -> None:
    # Run on <name>-dlq, it cut that dead-letter queue's retention to a day and gave it
    # a <name>-dlq-dlq.
    create(client, f"{queue_name}-dlq", MessageRetentionPeriod="1209600")
    with pytest.raises(CommandError, match=rf"dead-letter queue.*--name {queue_name}\b"):
        call_command("scheduler_create_queue", "--name", f"{queue_name}-dlq")
    assert attributes(client, f"{queue_name}-dlq")["MessageRetentionPeriod"] == "1209600"
    assert len(client.list_queues(QueueNamePrefix=queue_name)["QueueUrls"]) == 1


def test_a_celery_queue_name_with_a_dot_creates_the_sqs_queue_kombu_polls(
    queue_name: str, client: Any
) -> None:
    # "reports.slow" was refused as no SQS queue name, without a word of reports-slow,
    # the queue its workers poll and its jobs go to.
    out = io.StringIO()
    call_command("scheduler_create_queue", "--name", f"{queue_name}.slow", stdout=out)

    names = client.list_queues(QueueNamePrefix=queue_name)["QueueUrls"]
    assert sorted(url.rsplit("/", 1)[-1] for url in names) == [
        f"{queue_name}-slow",
        f"{queue_name}-slow-dlq",
    ]
    assert (
        f"Celery queue '{queue_name}.slow' is the SQS queue '{queue_name}-slow'" in out.getvalue()
    )


def test_a_name_with_no_room_for_its_dead_letter_queue_says_so(queue_name: str) -> None:
    # A 77-80 character name, a valid SQS name, was called not one.
    name = "q" * 78
    with pytest.raises(CommandError, match=rf"'{name}-dlq'.* 82 characters.*at most 76"):
        call_command("scheduler_create_queue", "--name", name)
