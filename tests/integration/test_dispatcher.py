"""The dispatcher against real PostgreSQL and an SQS server, with time frozen and moved."""

import json
import logging
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError
from django.db import connection
from freezegun import freeze_time

from payments.services import authorize_payment
from scheduler.conf import scheduler_settings
from scheduler.dispatch import dispatcher as dispatcher_module
from scheduler.dispatch import publisher as publisher_module
from scheduler.dispatch.concurrency import SendConcurrency
from scheduler.dispatch.dispatcher import REFUSED_QUEUE_RECHECK_SECONDS, Dispatcher
from scheduler.dispatch.publisher import PublishResult, SQSPublisher
from scheduler.models import DispatcherHeartbeat, FormSubmission, ScheduledJob
from scheduler.protocol import DISPATCH_TOKEN_HEADER, JOB_ID_HEADER
from scheduler.services import dispatching
from scheduler.testing import InMemoryPublisher
from tests.conftest import (
    RecordingPublisher,
    connection_to_a_reader,
    postgresql_out_of_reach,
    sqs_client,
)
from tests.factories import make_jobs

pytestmark = pytest.mark.django_db

DISPATCHER_LOG = "scheduler.dispatch.dispatcher"

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
Status = ScheduledJob.Status


def test_two_week_capture_waits_in_postgres_until_within_lookahead(sqs_queue, publisher):
    with freeze_time(T0) as clock:
        payment = authorize_payment(amount="25.00", currency="eur")
        job = payment.capture_job
        assert job.run_at == T0 + timedelta(days=14)
        dispatcher = Dispatcher(publisher=publisher)

        for moment in (timedelta(days=1), timedelta(days=13, hours=23, minutes=54)):
            clock.move_to(T0 + moment)
            assert dispatcher.run_once().sent == 0
        job.refresh_from_db()
        assert job.status == Status.SCHEDULED
        assert sqs_queue.count() == 0

        # 300 s (the default lookahead) before run_at, and 0.4 s more: due.
        clock.move_to(job.run_at - timedelta(seconds=299.6))
        assert dispatcher.run_once().sent == 1

    [message] = publisher.published
    assert message.job_id == job.pk
    # run_at - now - the 2 s delivery lead, rounded down: the worker holds the message
    # a little over 2 s before run_at and waits out the exact eta.
    assert message.delay_seconds == 297
    assert message.eta == job.run_at
    job.refresh_from_db()
    assert job.status == Status.ENQUEUED
    assert str(job.dispatch_token) == message.dispatch_token
    [received] = sqs_queue.receive(wait=0) or [None]
    # DelaySeconds holds it back for real, so it is not visible yet.
    assert received is None
    assert sqs_queue.count() == 1


def test_delay_is_never_above_the_limit_nor_sent_before_the_lookahead(settings):
    settings.SCHEDULER_MAX_DELAY_SECONDS = 120
    settings.SCHEDULER_LOOKAHEAD_SECONDS = 60
    settings.SCHEDULER_STALE_AFTER_SECONDS = 3600
    publisher = InMemoryPublisher()
    with freeze_time(T0) as clock:
        make_jobs([T0 + timedelta(seconds=s) for s in (30, 59, 60, 61, 600)])
        dispatcher = Dispatcher(publisher=publisher)
        assert dispatcher.run_once().sent == 3
        assert [m.delay_seconds for m in publisher.published] == [28, 57, 58]
        clock.tick(1)
        dispatcher.run_once()
        clock.move_to(T0 + timedelta(seconds=540))
        dispatcher.run_once()
    assert [m.delay_seconds for m in publisher.published] == [28, 57, 58, 58, 58]
    # Each was sent exactly when run_at - now reached the 60 s lookahead, never earlier,
    # and is released 2 s (the delivery lead) before its run_at.


def test_past_due_jobs_go_out_with_delay_zero_in_run_at_order(sqs_queue, publisher):
    with freeze_time(T0):
        jobs = make_jobs([T0 - timedelta(hours=h) for h in (1, 5, 3, 48, 2)])
        assert Dispatcher(publisher=publisher).run_once().sent == 5
    assert [m.delay_seconds for m in publisher.published] == [0] * 5
    expected = [job.pk for job in sorted(jobs, key=lambda job: job.run_at)]
    assert [m.job_id for m in publisher.published] == expected
    received = sqs_queue.receive()
    assert {int(m["headers"][JOB_ID_HEADER]) for m in received} == set(expected)


def test_messages_are_the_jobs_own_task_carrying_only_id_and_token(sqs_queue, publisher):
    with freeze_time(T0):
        [job] = make_jobs([T0 - timedelta(seconds=1)], args=["secret-card-number"])
        Dispatcher(publisher=publisher).run_once()
    [envelope] = sqs_queue.receive()
    job.refresh_from_db()
    assert envelope["headers"]["task"] == job.task_name
    assert envelope["headers"]["eta"] == job.run_at.isoformat()
    assert envelope["headers"][JOB_ID_HEADER] == str(job.pk)
    assert envelope["headers"][DISPATCH_TOKEN_HEADER] == str(job.dispatch_token)
    assert envelope["decoded_body"][0] == []
    assert envelope["decoded_body"][1] == {}
    assert "secret-card-number" not in str(envelope)
    assert envelope["properties"]["delivery_info"]["routing_key"] == sqs_queue.name


def test_a_claim_and_a_resend_take_each_token_as_the_text_its_message_carries():
    # Not as a UUID, which the driver built for every row: a tenth of a 100-job claim.
    with freeze_time(T0):
        [job] = make_jobs([T0 - timedelta(seconds=1)])
        [claimed] = dispatching.dispatch_due(now=T0, limit=10)
    job.refresh_from_db()
    assert claimed.dispatch_token == str(job.dispatch_token)
    later = T0 + timedelta(seconds=scheduler_settings.STALE_AFTER_SECONDS + 1)
    [taken] = dispatching.take_resends(now=later, limit=10)
    assert taken.dispatch_token == claimed.dispatch_token


def test_batches_of_ten_per_send_message_batch_call(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 25
    calls: list[int] = []
    # A client of this test's own, not the process-wide one.
    client = sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL)
    real = client.send_message_batch

    def counting(**kwargs):
        calls.append(len(kwargs["Entries"]))
        return real(**kwargs)

    client.send_message_batch = counting
    publisher = SQSPublisher(client=client)
    with freeze_time(T0):
        make_jobs([T0] * 57)
        result = Dispatcher(publisher=publisher).run_once()
    assert result.sent == 57
    # Batches of 25 rows, each sent ten to a call (the calls of a batch go out at once).
    assert sorted(calls) == sorted([10, 10, 5, 10, 10, 5, 7])
    assert ScheduledJob.objects.filter(status=Status.ENQUEUED).count() == 57


class RejectingPublisher(RecordingPublisher):
    """Asks SQS for an impossible delay for some jobs, which SQS rejects per entry."""

    def __init__(self, reject: set[int]) -> None:
        super().__init__()
        self.reject = reject

    def publish(self, messages):
        messages = [
            m._replace(delay_seconds=1000) if m.job_id in self.reject else m for m in messages
        ]
        return super().publish(messages)


def test_a_rejected_entry_leaves_its_job_scheduled_for_the_next_tick(sqs_queue):
    with freeze_time(T0):
        jobs = make_jobs([T0] * 3)
        bad = jobs[1]
        result = Dispatcher(publisher=RejectingPublisher({bad.pk})).run_once()
        assert (result.sent, result.failed) == (2, 1)
        assert result.errors == ["sqs rejected 1 message(s)"]
        statuses = dict(ScheduledJob.objects.values_list("pk", "status"))
        assert statuses == {jobs[0].pk: "enqueued", bad.pk: "scheduled", jobs[2].pk: "enqueued"}
        bad.refresh_from_db()
        assert bad.dispatch_token is None

        result = Dispatcher(publisher=RecordingPublisher()).run_once()
        assert (result.sent, result.failed) == (1, 0)
    assert ScheduledJob.objects.filter(status=Status.ENQUEUED).count() == 3
    assert len(sqs_queue.receive()) == 3


def test_a_refused_job_is_put_back_exactly_as_it_was(sqs_queue):
    # A retried job still carries what its last dispatch wrote; a refused dispatch (the
    # claim and the mark are one statement) must leave no trace of itself on the row.
    earlier = T0 - timedelta(hours=1)
    with freeze_time(T0):
        [retried, fresh, sent] = make_jobs(
            [T0] * 3,
            dispatch_token=uuid.uuid4(),
            sends=3,
            enqueued_at=earlier,
            resend_at=earlier,
            updated_at=earlier,
        )
        before = {row["id"]: row for row in ScheduledJob.objects.values()}
        ScheduledJob.objects.filter(pk=fresh.pk).update(
            dispatch_token=None, sends=0, enqueued_at=None, resend_at=None
        )
        before[fresh.pk] = ScheduledJob.objects.values().get(pk=fresh.pk)
        publisher = RejectingPublisher({retried.pk, fresh.pk})
        result = Dispatcher(publisher=publisher).run_once()
    assert (result.sent, result.failed) == (1, 2)
    after = {row["id"]: row for row in ScheduledJob.objects.values()}
    assert after[retried.pk] == before[retried.pk]
    assert after[fresh.pk] == before[fresh.pk]
    assert after[sent.pk]["status"] == Status.ENQUEUED
    assert after[sent.pk]["sends"] == 1
    assert after[sent.pk]["dispatch_token"] not in (None, before[sent.pk]["dispatch_token"])


def test_an_sqs_outage_leaves_every_job_scheduled_and_reports_the_error(sqs_queue, settings):
    with freeze_time(T0):
        make_jobs([T0 - timedelta(minutes=1)] * 12)
        settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens there
        result = Dispatcher().run_once()
        assert result.sent == 0
        assert result.failed == 12
        assert len(result.errors) == 1
        assert "Could not connect" in result.errors[0]
        assert ScheduledJob.objects.filter(status=Status.SCHEDULED).count() == 12
        heartbeat = DispatcherHeartbeat.objects.get()
        assert heartbeat.errors == 1
        assert "Could not connect" in heartbeat.last_error

        settings.SCHEDULER_SQS_ENDPOINT_URL = sqs_queue.client.meta.endpoint_url
        assert Dispatcher().run_once().sent == 12
    assert ScheduledJob.objects.filter(status=Status.ENQUEUED).count() == 12


def _queries_for_one_tick(django_assert_max_num_queries, count):
    with freeze_time(T0):
        ScheduledJob.objects.all().delete()
        dispatcher = Dispatcher(publisher=InMemoryPublisher())
        dispatcher.run_once()  # recovery and purge, at their own cadence
        make_jobs([T0 + timedelta(seconds=i % 60) for i in range(count)])
        with django_assert_max_num_queries(10) as captured:
            assert dispatcher.run_once().sent == count
        return len(captured.captured_queries)


def test_tick_query_count_does_not_grow_with_jobs_sent(django_assert_max_num_queries):
    few = _queries_for_one_tick(django_assert_max_num_queries, 3)
    many = _queries_for_one_tick(django_assert_max_num_queries, 90)
    assert few == many


class MeetingPublisher(RecordingPublisher):
    """Holds its first batch until the other dispatcher holds one too, so the two ticks
    overlap however the threads are scheduled (one might otherwise send every job
    before the other has finished its recovery)."""

    def __init__(self, meet: threading.Barrier) -> None:
        super().__init__()
        self.meet = meet
        self.met = False

    def publish(self, messages):
        if not self.met:
            self.met = True
            self.meet.wait(30)
        return super().publish(messages)


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_ticking_at_once_send_each_job_exactly_once(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 7
    jobs = make_jobs([datetime.now(UTC) - timedelta(seconds=1)] * 40)
    meet = threading.Barrier(2)
    publishers = [MeetingPublisher(meet), MeetingPublisher(meet)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def tick(publisher):
        try:
            barrier.wait()
            Dispatcher(publisher=publisher).run_once()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick, args=(p,)) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    sent = [m.job_id for p in publishers for m in p.published]
    assert sorted(sent) == sorted(job.pk for job in jobs)
    assert all(p.published for p in publishers), "both dispatchers took part"
    received = []
    while batch := sqs_queue.receive():
        received.extend(int(m["headers"][JOB_ID_HEADER]) for m in batch)
    assert sorted(received) == sorted(sent)
    tokens = dict(ScheduledJob.objects.values_list("pk", "dispatch_token"))
    assert {m.job_id: m.dispatch_token for p in publishers for m in p.published} == {
        pk: str(token) for pk, token in tokens.items()
    }


def test_ticks_purge_old_finished_jobs_hourly_and_record_a_heartbeat(settings):
    settings.SCHEDULER_RETENTION_DAYS = 30
    with freeze_time(T0) as clock:
        payment = authorize_payment(amount="1.00", currency="EUR")
        old_done = make_jobs([T0 - timedelta(days=40)], status=Status.SUCCEEDED, finished_at=T0)[0]
        ScheduledJob.objects.filter(pk__in=[old_done.pk, payment.capture_job_id]).update(
            status=Status.SUCCEEDED, finished_at=T0 - timedelta(days=31)
        )
        recent = make_jobs([T0], status=Status.FAILED, finished_at=T0 - timedelta(days=29))[0]
        waiting = make_jobs([T0 + timedelta(days=60)])[0]
        dispatcher = Dispatcher(publisher=InMemoryPublisher(), name="tick-test")
        assert dispatcher.run_once().purged == 2
        remaining = set(ScheduledJob.objects.values_list("pk", flat=True))
        assert remaining == {recent.pk, waiting.pk}
        payment.refresh_from_db()
        assert payment.capture_job is None  # the payment itself is kept

        DispatcherHeartbeat.objects.create(dispatcher="gone:1", last_tick_at=T0 - timedelta(days=2))
        old_form, new_form = uuid.uuid4(), uuid.uuid4()
        FormSubmission.objects.create(token=old_form, submitted_at=T0 - timedelta(days=2))
        FormSubmission.objects.create(token=new_form, submitted_at=T0)
        heartbeat = DispatcherHeartbeat.objects.get(dispatcher="tick-test")
        assert (heartbeat.last_tick_at, heartbeat.jobs_sent, heartbeat.errors) == (T0, 0, 0)

        make_jobs(
            [T0 - timedelta(days=1)], status=Status.CANCELLED, finished_at=T0 - timedelta(days=99)
        )
        clock.tick(60)
        assert dispatcher.run_once().purged == 0  # purging runs once an hour
        clock.tick(3600)
        assert dispatcher.run_once().purged == 1
        assert list(DispatcherHeartbeat.objects.values_list("dispatcher", flat=True)) == [
            "tick-test"
        ]
        assert list(FormSubmission.objects.values_list("token", flat=True)) == [new_form]
        heartbeat.refresh_from_db()
        assert heartbeat.last_tick_at == T0 + timedelta(seconds=3660)


def test_two_dispatchers_with_the_same_host_and_pid_keep_a_heartbeat_each(monkeypatch):
    # Two containers on one host's network (beat in one, scheduler_dispatch in the
    # other), each running its command as pid 1: both were "host:1", one row, their
    # sent counts mixed and a dead one hidden by the live one's ticks.
    monkeypatch.setattr("os.getpid", lambda: 1)
    first, second = (
        Dispatcher(publisher=InMemoryPublisher()),
        Dispatcher(publisher=InMemoryPublisher()),
    )
    make_jobs([T0] * 3)
    with freeze_time(T0):
        assert first.run_once().sent == 3
    make_jobs([T0] * 2)
    with freeze_time(T0 + timedelta(seconds=1)):
        assert second.run_once().sent == 2
    sent = dict(DispatcherHeartbeat.objects.values_list("dispatcher", "sent_total"))
    assert sent == {first.name: 3, second.name: 2}
    assert first.name.startswith(f"{socket.gethostname()}:1:")


# Batches of 25: one, short. Batches of 10: the lost job is the oldest, so the first
# batch takes it with nine others; the later batches leave it, and the tick goes on.
@pytest.mark.parametrize(("batch_size", "others"), [(25, 20), (10, 45)])
def test_a_job_on_a_queue_that_does_not_exist_holds_back_no_other(
    sqs_queue, settings, batch_size, others
):
    settings.SCHEDULER_BATCH_SIZE = batch_size
    with freeze_time(T0):
        [lost] = make_jobs([T0 - timedelta(minutes=1)], queue="no-such-queue")
        make_jobs([T0] * others)
        result = Dispatcher(publisher=SQSPublisher()).run_once()
    assert (result.sent, result.failed) == (others, 1)
    [error] = result.errors
    assert "NonExistentQueue" in error
    assert not result.outage
    assert ScheduledJob.objects.filter(status=Status.ENQUEUED).count() == others
    lost.refresh_from_db()
    assert lost.status == Status.SCHEDULED


def _row_versions(jobs):
    """Each job's row version (``xmin``): it changes whenever the row is written."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, xmin::text FROM scheduler_scheduledjob WHERE id = ANY(%s) ORDER BY id",
            [[job.pk for job in jobs]],
        )
        return cursor.fetchall()


def test_a_tick_whose_batch_sqs_took_none_of_rewrites_no_row(sqs_queue, settings):
    # SQS down for half an hour: every back-off tick takes a batch and sends none of it.
    # Undoing that by rolling back leaves the rows as they were; undoing it row by row
    # would write each twice, index entries and WAL included, every tick.
    with freeze_time(T0):
        jobs = make_jobs([T0 - timedelta(minutes=1)] * 12)
        versions = _row_versions(jobs)
        settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens there
        assert Dispatcher().run_once().failed == 12
    assert _row_versions(jobs) == versions


def test_a_whole_batch_of_jobs_on_a_missing_queue_holds_back_no_other(sqs_queue, settings):
    # A deploy with a mistyped queue name on the worst day: a batch or more of the
    # oldest due jobs can never be sent. The others must still go, and the lost ones
    # must not be claimed and put back by every tick meanwhile.
    settings.SCHEDULER_BATCH_SIZE = 10
    # Created during the test: a name of its own, so no other test finds it there.
    mistyped = f"mistyped-{uuid.uuid4().hex}"
    dispatcher = Dispatcher(publisher=SQSPublisher())
    with freeze_time(T0) as clock:
        lost = make_jobs([T0 - timedelta(minutes=1)] * 25, queue=mistyped)
        make_jobs([T0] * 15)
        first = dispatcher.run_once()
        # The first batch finds the queue missing; the others leave its jobs.
        assert (first.sent, first.failed, first.outage) == (15, 10, False)
        versions = _row_versions(lost)
        clock.tick(REFUSED_QUEUE_RECHECK_SECONDS - 0.1)
        second = dispatcher.run_once()
        # Held back, not taken: the rows are not written, and the tick still says why.
        assert (second.sent, second.failed, second.outage) == (0, 0, False)
        assert _row_versions(lost) == versions
        [error] = second.errors
        assert mistyped in error
        assert "NonExistentQueue" in error
        clock.tick(0.2)
        sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL).create_queue(QueueName=mistyped)
        assert dispatcher.run_once().sent == 25
    assert not ScheduledJob.objects.filter(status=Status.SCHEDULED).exists()


def _assert_held_back(result, *, sent, held, said):
    """``result`` is a tick that sent ``sent`` jobs and left ``held`` (all on one queue,
    which SQS refused saying ``said``) scheduled, naming their queue, with no outage."""
    assert (result.sent, result.failed, result.outage) == (sent, len(held), False)
    [error] = result.errors
    assert held[0].queue in error
    assert said in error
    assert set(ScheduledJob.objects.filter(status=Status.SCHEDULED)) == set(held)


def test_a_queue_deleted_while_the_dispatcher_runs_is_missing_not_an_outage(sqs_queue, settings):
    # Its URL was looked up before: SQS now refuses the sends themselves. Taken for an
    # outage, the tick would stop at the first batch holding its jobs, every tick.
    settings.SCHEDULER_BATCH_SIZE = 10
    client = sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL)
    deleted = f"deleted-{uuid.uuid4().hex}"
    url = client.create_queue(QueueName=deleted)["QueueUrl"]
    dispatcher = Dispatcher(publisher=SQSPublisher())
    with freeze_time(T0):
        make_jobs([T0 - timedelta(minutes=2)], queue=deleted)
        assert dispatcher.run_once().sent == 1
        client.delete_queue(QueueUrl=url)
        lost = make_jobs([T0 - timedelta(minutes=1)] * 10, queue=deleted)
        make_jobs([T0] * 5)
        result = dispatcher.run_once()
    _assert_held_back(result, sent=5, held=lost, said="NonExistentQueue")


def test_unclaimed_jobs_of_a_deleted_queue_hold_back_no_other_resend(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 10
    settings.SCHEDULER_STALE_AFTER_SECONDS = 60
    client = sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL)
    deleted = f"deleted-{uuid.uuid4().hex}"
    url = client.create_queue(QueueName=deleted)["QueueUrl"]
    dispatcher = Dispatcher(publisher=SQSPublisher())
    with freeze_time(T0) as clock:
        # Nobody claims them; the deleted queue's copies are due to go again first.
        lost = make_jobs([T0] * 10, queue=deleted)
        assert dispatcher.run_once().sent == 10
        clock.tick(1)
        make_jobs([T0 + timedelta(seconds=1)] * 5)
        assert dispatcher.run_once().sent == 5
        client.delete_queue(QueueUrl=url)
        clock.tick(scheduler_settings.RECOVERY_INTERVAL_SECONDS + 60)
        result = dispatcher.run_once()
    assert (result.resent, result.outage) == (5, False)
    [error] = result.errors
    assert deleted in error
    # Their copies were given back: they go again once the queue is there.
    assert set(ScheduledJob.objects.filter(sends=1)) == set(lost)


def _denying(client, queue):
    """``client``, whose calls naming ``queue`` SQS answers with AccessDenied, as IAM
    does for a queue missing from the dispatcher's policy."""

    def deny(params, **_):
        if queue.encode() in params["body"]:
            error = {"Code": "AccessDenied", "Message": "not authorized to perform sqs:*"}
            return AWSResponse(params["url"], 403, {}, None), {
                "Error": error,
                "ResponseMetadata": {"HTTPStatusCode": 403},
            }
        return None

    client.meta.events.register("before-call.sqs.*", deny)
    return client


def test_a_queue_the_dispatcher_may_not_send_to_holds_back_no_other(sqs_queue, settings):
    # Not an outage: waiting does not help, and the other queues are fine. Taken for
    # one, its jobs, the oldest, would end every tick at their batch, with back-off.
    settings.SCHEDULER_BATCH_SIZE = 10
    forbidden = f"forbidden-{uuid.uuid4().hex}"
    client = _denying(sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL), forbidden)
    with freeze_time(T0):
        lost = make_jobs([T0 - timedelta(minutes=1)] * 10, queue=forbidden)
        make_jobs([T0] * 15)
        result = Dispatcher(publisher=SQSPublisher(client=client)).run_once()
    _assert_held_back(result, sent=15, held=lost, said="AccessDenied")


def _refusing_entries(client, queue, code):
    """``client``, whose SendMessageBatch calls to ``queue`` SQS answers entry by entry
    with ``code``, as it does when it cannot use the queue's KMS key."""

    def refuse(params, **_):
        if queue.encode() not in params["body"]:
            return None
        failed = [
            {"Id": entry["Id"], "SenderFault": True, "Code": code, "Message": "key disabled"}
            for entry in json.loads(params["body"])["Entries"]
        ]
        return AWSResponse(params["url"], 200, {}, None), {
            "Successful": [],
            "Failed": failed,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    client.meta.events.register("before-call.sqs.SendMessageBatch", refuse)
    return client


def test_a_queue_whose_key_sqs_may_not_use_holds_back_no_other(sqs_queue, settings):
    # SQS says so entry by entry in a call that succeeds, not as the call's error.
    settings.SCHEDULER_BATCH_SIZE = 10
    encrypted = f"encrypted-{uuid.uuid4().hex}"
    sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL).create_queue(QueueName=encrypted)
    client = sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL)
    client = _refusing_entries(client, encrypted, "KMS.DisabledException")
    dispatcher = Dispatcher(publisher=SQSPublisher(client=client))
    with freeze_time(T0) as clock:
        held = make_jobs([T0 - timedelta(minutes=1)] * 10, queue=encrypted)
        make_jobs([T0] * 15)
        result = dispatcher.run_once()
        _assert_held_back(result, sent=15, held=held, said="KMS.DisabledException")
        # Its jobs wait in PostgreSQL, untouched, until SQS is asked again.
        assert dispatcher.run_once().failed == 0
        clock.tick(REFUSED_QUEUE_RECHECK_SECONDS + 0.1)
        assert dispatcher.run_once().failed == 10


def test_an_entry_sqs_throttles_is_an_outage_not_a_refused_queue(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 10
    client = _refusing_entries(
        sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL), sqs_queue.name, "KMS.ThrottlingException"
    )
    with freeze_time(T0):
        make_jobs([T0] * 15)
        result = Dispatcher(publisher=SQSPublisher(client=client)).run_once()
    assert (result.sent, result.failed, result.outage) == (0, 10, True)
    assert result.errors == ["sqs rejected 10 message(s)"]


def test_a_queue_found_missing_is_looked_up_again_only_after_a_while(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 10
    client = sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL)
    lookups: list[str] = []
    real = client.get_queue_url

    def counting(**kwargs):
        lookups.append(kwargs["QueueName"])
        return real(**kwargs)

    client.get_queue_url = counting
    dispatcher = Dispatcher(publisher=SQSPublisher(client=client))
    with freeze_time(T0) as clock:
        make_jobs([T0 - timedelta(minutes=1)], queue="no-such-queue")
        make_jobs([T0] * 45)
        assert dispatcher.run_once().sent == 45  # in six batches
        assert lookups.count("no-such-queue") == 1
        make_jobs([T0] * 5)
        clock.tick(REFUSED_QUEUE_RECHECK_SECONDS - 0.1)
        assert dispatcher.run_once().sent == 5
        assert lookups.count("no-such-queue") == 1
        clock.tick(0.2)
        dispatcher.run_once()
        assert lookups.count("no-such-queue") == 2


def test_messages_sqs_rejects_still_end_the_tick_at_their_batch(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 10
    with freeze_time(T0):
        make_jobs([T0] * 45)
        publisher = RejectingPublisher(set(ScheduledJob.objects.values_list("pk", flat=True)))
        result = Dispatcher(publisher=publisher).run_once()
    assert (result.sent, result.failed) == (0, 10)
    assert ScheduledJob.objects.filter(status=Status.SCHEDULED).count() == 45


def _pauses(dispatcher, ticks):
    """The pauses ``run()`` takes after each of ``ticks`` ticks."""
    pauses: list[float] = []
    dispatcher._sleep = pauses.append
    dispatcher.run(max_ticks=ticks)
    return pauses


@pytest.mark.django_db(transaction=True)  # run() closes the connection it finds unusable
def test_the_loop_backs_off_while_sqs_fails_but_not_for_a_refused_queue(sqs_queue, settings):
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 1
    make_jobs([datetime.now(UTC)], queue="no-such-queue")
    assert max(_pauses(Dispatcher(publisher=SQSPublisher()), 4)) <= 1
    # Messages SQS refuses for good (a delay beyond its 900 s) refuse their queue.
    make_jobs([datetime.now(UTC)] * 2)
    rejecting = RejectingPublisher(set(ScheduledJob.objects.values_list("pk", flat=True)))
    assert max(_pauses(Dispatcher(publisher=rejecting), 4)) <= 1
    assert _pauses(Dispatcher(publisher=DownPublisher()), 4)[-1] > 1


class FirstEntryFailingClient:
    """The test SQS server, but SQS fails the first entry of every SendMessageBatch call
    alone with ``code`` (as it may with ``InternalError`` or ``KMS.ThrottlingException``)
    and takes the others."""

    def __init__(self, endpoint, code):
        self.client = sqs_client(endpoint)
        self.code = code

    def get_queue_url(self, **kwargs):
        return self.client.get_queue_url(**kwargs)

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803 - boto3's argument names
        first, *others = Entries
        response = self.client.send_message_batch(QueueUrl=QueueUrl, Entries=others)
        failed = {
            "Id": first["Id"],
            "SenderFault": False,
            "Code": self.code,
            "Message": "try again",
        }
        return {**response, "Failed": [*response.get("Failed", []), failed]}


@pytest.mark.parametrize("code", ["InternalError", "KMS.ThrottlingException"])
def test_an_entry_sqs_fails_alone_is_put_back_and_the_tick_goes_on(sqs_queue, settings, code):
    # 9 of each 10 went through: no outage. Ending the tick there (and backing off)
    # would hold back every other due job for the failure of one message.
    settings.SCHEDULER_BATCH_SIZE = 10
    client = FirstEntryFailingClient(settings.SCHEDULER_SQS_ENDPOINT_URL, code)
    with freeze_time(T0):
        [unlucky] = make_jobs([T0 - timedelta(minutes=1)])
        make_jobs([T0] * 44)
        result = Dispatcher(publisher=SQSPublisher(client=client)).run_once()
    # The oldest job fails in each batch (put back, it is the oldest again): five
    # batches, the last one short.
    assert (result.sent, result.failed, result.outage) == (44, 5, False)
    assert result.errors == ["sqs rejected 1 message(s)"]
    assert set(ScheduledJob.objects.filter(status=Status.SCHEDULED)) == {unlucky}
    unlucky.refresh_from_db()
    assert unlucky.dispatch_token is None
    received = []
    while batch := sqs_queue.receive():
        received.extend(batch)
    assert len(received) == 44


class FirstMessageFailingPublisher(InMemoryPublisher):
    """Takes every message but the first of each publish, which fails alone."""

    def publish(self, messages):
        first, *others = messages
        result = super().publish(others)
        result.failed[first.job_id] = "InternalError: We encountered an internal error."
        return result


@pytest.mark.django_db(transaction=True)  # run() closes the connection it finds unusable
def test_one_entry_failing_in_each_batch_neither_ends_the_tick_nor_backs_the_loop_off(settings):
    settings.SCHEDULER_BATCH_SIZE = 100
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 5
    make_jobs([datetime.now(UTC) - timedelta(seconds=1)] * 2000)
    dispatcher = Dispatcher(publisher=FirstMessageFailingPublisher())
    ticks = []
    run_once = dispatcher.run_once
    dispatcher.run_once = lambda: ticks.append(run_once()) or ticks[-1]
    pauses = _pauses(dispatcher, 2)
    # The first tick sends all but the job that fails in each of its 21 batches
    # (before: 99, then 99 a tick, each tick backing off longer, up to 150 s).
    assert (ticks[0].sent, ticks[0].failed, ticks[0].outage) == (1999, 21, False)
    assert pauses[0] <= 5
    assert ScheduledJob.objects.filter(status=Status.ENQUEUED).count() == 1999
    # Alone in its batch, SQS takes none of it: that may be an outage.
    assert (ticks[1].sent, ticks[1].failed, ticks[1].outage) == (0, 1, True)


class DownPublisher(InMemoryPublisher):
    """SQS out of reach: every call fails."""

    def publish(self, messages):
        error = "EndpointConnectionError: Could not connect to the endpoint URL"
        return PublishResult(failed={m.job_id: error for m in messages}, error=error)


@pytest.mark.django_db(transaction=True)
def test_a_dispatcher_left_on_a_reader_by_a_failover_reconnects_and_judges_no_lease_yet():
    # A server that takes no writes (25006) was no outage: the connection was kept (up to
    # CONN_MAX_AGE, every tick failing), and leases, whose heartbeats had failed alike,
    # were judged as soon as a write went through.
    make_jobs([datetime.now(UTC) - timedelta(seconds=1)] * 3)
    publisher = InMemoryPublisher()
    dispatcher = Dispatcher(publisher=publisher)
    with connection_to_a_reader():
        tick = dispatcher.run_once()
    # Its recovery, first, met the reader; its sends went through a new connection.
    assert (tick.sent, tick.outage) == (3, True)
    assert [error for error in tick.errors if "read-only transaction" in error]
    assert dispatcher._judge_leases_from > time.monotonic() + 0.9 * scheduler_settings.LEASE_SECONDS


@pytest.mark.django_db(transaction=True)
def test_an_outage_is_one_line_per_failure_and_a_bug_keeps_its_traceback(caplog, monkeypatch):
    # PostgreSQL down for half an hour: each step of each tick (re-sends, recovery, due
    # jobs, heartbeat) wrote a traceback, some 150 lines a tick, hiding everything else.
    dispatcher = Dispatcher(publisher=InMemoryPublisher())
    with postgresql_out_of_reach(), caplog.at_level(logging.WARNING, logger=DISPATCHER_LOG):
        tick = dispatcher.run_once()
    failures = [record for record in caplog.records if " failed " in record.getMessage()]
    assert tick.outage
    assert {record.getMessage().split(" dispatcher=")[0] for record in failures} == {
        "dispatcher batch failed",
        "dispatcher recovery failed",
        "dispatcher heartbeat failed",
    }
    for record in failures:
        assert (record.levelno, record.exc_info) == (logging.WARNING, None)
        assert "Connection refused" in record.getMessage()

    caplog.clear()

    def bug(**_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dispatching, "expire_missed", bug)
    with caplog.at_level(logging.WARNING, logger=DISPATCHER_LOG):
        tick = Dispatcher(publisher=InMemoryPublisher()).run_once()
    [failure] = [record for record in caplog.records if " failed " in record.getMessage()]
    assert not tick.outage
    assert failure.levelno == logging.ERROR
    assert failure.exc_info
    assert str(failure.exc_info[1]) == "a bug"


@pytest.mark.django_db(transaction=True)  # run() closes the connection it finds unusable
@pytest.mark.parametrize("down", ["postgresql", "sqs"])
def test_the_loop_backs_off_at_most_six_intervals_however_long_the_outage(settings, down):
    # A failover of a minute or two must not leave the loop asleep for minutes more,
    # holding back the jobs due as soon as possible (retries, "run now") that long.
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 5
    settings.SCHEDULER_LOOKAHEAD_SECONDS = 300
    make_jobs([datetime.now(UTC) - timedelta(seconds=1)])
    dispatcher = Dispatcher(publisher=DownPublisher())
    if down == "postgresql":
        with postgresql_out_of_reach():
            pauses = _pauses(dispatcher, 12)
    else:
        pauses = _pauses(dispatcher, 12)
    # Equal jitter: between half the cap and the cap once it is reached.
    assert max(pauses) <= 30
    assert min(pauses[-4:]) >= 15
    assert pauses[0] <= 5


def test_a_queue_that_takes_no_message_of_the_jobs_holds_back_no_other(sqs_queue, settings):
    # A queue made elsewhere with a MaximumMessageSize below the jobs' messages: SQS
    # refuses each call (400 InvalidParameterValue). Taken for an outage, its jobs, the
    # oldest, ended every tick at their batch, and no other queue's job was ever sent.
    settings.SCHEDULER_BATCH_SIZE = 10
    small = f"small-{uuid.uuid4().hex}"
    sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL).create_queue(
        QueueName=small, Attributes={"MaximumMessageSize": "1024"}
    )
    with freeze_time(T0):
        held = make_jobs([T0 - timedelta(minutes=1)] * 10, queue=small)
        make_jobs([T0] * 15)
        result = Dispatcher(publisher=SQSPublisher()).run_once()
    _assert_held_back(result, sent=15, held=held, said="InvalidParameterValue")


def test_every_message_of_a_queue_refused_entry_by_entry_holds_back_no_other(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 10
    bad = f"bad-{uuid.uuid4().hex}"
    sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL).create_queue(QueueName=bad)
    client = _refusing_entries(
        sqs_client(settings.SCHEDULER_SQS_ENDPOINT_URL), bad, "InvalidParameterValue"
    )
    with freeze_time(T0):
        held = make_jobs([T0 - timedelta(minutes=1)] * 10, queue=bad)
        make_jobs([T0] * 15)
        result = Dispatcher(publisher=SQSPublisher(client=client)).run_once()
    _assert_held_back(result, sent=15, held=held, said="InvalidParameterValue")


def test_one_message_sqs_refuses_with_its_whole_call_fails_alone(sqs_queue, settings):
    # Its call's nine others go, each alone; the queue is not refused for one job.
    settings.SCHEDULER_BATCH_SIZE = 10
    with freeze_time(T0):
        [oversized] = make_jobs([T0 - timedelta(minutes=1)])
        make_jobs([T0] * 14)
        client = _OneTooLongThenDownClient(
            settings.SCHEDULER_SQS_ENDPOINT_URL, too_long=oversized.pk
        )
        result = Dispatcher(publisher=SQSPublisher(client=client)).run_once()
    assert (result.sent, result.failed, result.outage) == (14, 2, False)
    assert result.errors == ["sqs rejected 1 message(s)"]
    assert set(ScheduledJob.objects.filter(status=Status.SCHEDULED)) == {oversized}


class _RaisingClient:
    """SQS whose SendMessageBatch raises what botocore raises when credentials it just
    refreshed are still expired (no ClientError: a RuntimeError)."""

    def __init__(self, endpoint):
        self.client = sqs_client(endpoint)

    def get_queue_url(self, **kwargs):
        return self.client.get_queue_url(**kwargs)

    def send_message_batch(self, **_):
        raise RuntimeError(
            "Credentials were refreshed, but the refreshed credentials are still expired."
        )


def test_a_send_that_raises_is_an_outage_the_heartbeat_shows(sqs_queue, settings):
    # It crashed the tick after the probe had recorded a clean one: monitoring saw a
    # healthy dispatcher that sent nothing.
    client = _RaisingClient(settings.SCHEDULER_SQS_ENDPOINT_URL)
    with freeze_time(T0):
        make_jobs([T0] * 12)
        result = Dispatcher(publisher=SQSPublisher(client=client), name="raising").run_once()
    assert (result.sent, result.failed, result.outage) == (0, 12, True)
    [error] = result.errors
    assert "RuntimeError: Credentials were refreshed" in error
    heartbeat = DispatcherHeartbeat.objects.get(dispatcher="raising")
    assert (heartbeat.errors, heartbeat.errors_total) == (1, 1)
    assert "RuntimeError" in heartbeat.last_error
    assert ScheduledJob.objects.filter(status=Status.SCHEDULED).count() == 12


class _CrashingPublisher(InMemoryPublisher):
    """A publisher of one's own that raises."""

    def publish(self, messages):
        raise RuntimeError("publisher bug")


def test_copies_taken_for_a_publisher_that_raises_are_given_back(settings):
    # Counted before they go, they were never sent, and each crash doubled the wait for
    # the next copy; the tick's other recovery steps and due jobs were skipped.
    settings.SCHEDULER_STALE_AFTER_SECONDS = 60
    with freeze_time(T0) as clock:
        unclaimed = make_jobs([T0] * 3)
        Dispatcher(publisher=InMemoryPublisher()).run_once()
        make_jobs([T0 + timedelta(minutes=30)])
        clock.tick(scheduler_settings.RECOVERY_INTERVAL_SECONDS + 120)
        result = Dispatcher(publisher=_CrashingPublisher(), name="crashing").run_once()
        now = datetime.now(UTC)
    assert result.outage
    assert any("RuntimeError: publisher bug" in error for error in result.errors)
    for job in unclaimed:
        job.refresh_from_db()
        # Due again at the next recovery, as a copy SQS refused is.
        assert (job.sends, job.resend_at) == (1, now)
    assert DispatcherHeartbeat.objects.get(dispatcher="crashing").errors == 1


class _FreezingPublisher(InMemoryPublisher):
    """Stops in its first publish until ``thaw`` is set, as a dispatcher frozen (or cut
    off from PostgreSQL, its host gone) between its claim and its commit."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen, self.thaw = threading.Event(), threading.Event()

    def publish(self, messages):
        self.frozen.set()
        self.thaw.wait(30)
        return super().publish(messages)


@pytest.mark.django_db(transaction=True)
def test_a_dispatcher_frozen_between_its_claim_and_commit_holds_its_jobs_a_while_only(
    monkeypatch,
):
    # Its rows stayed locked, skipped by every other dispatcher, for as long as it was
    # frozen; cut off, until the server's TCP keepalive gave up: two hours by default.
    monkeypatch.setattr(dispatcher_module, "CLAIM_IDLE_TIMEOUT", timedelta(seconds=1))
    jobs = make_jobs([datetime.now(UTC) - timedelta(seconds=1)] * 5)
    freezing = _FreezingPublisher()

    def tick():
        try:
            Dispatcher(publisher=freezing).run_once()
        finally:
            connection.close()

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        assert freezing.frozen.wait(10)
        healthy = InMemoryPublisher()
        assert Dispatcher(publisher=healthy).run_once().sent == 0  # its rows are locked
        time.sleep(1.5)
        assert Dispatcher(publisher=healthy).run_once().sent == 5
    finally:
        freezing.thaw.set()
        thread.join(30)
    tokens = dict(ScheduledJob.objects.values_list("pk", "dispatch_token"))
    # The healthy one's messages are the jobs' (the frozen one's, sent on thawing, carry
    # tokens that never committed: workers drop them).
    assert {m.job_id: m.dispatch_token for m in healthy.published} == {
        job.pk: str(tokens[job.pk]) for job in jobs
    }


def _bad_request(operation):
    error = {"Code": "InvalidParameterValue", "Message": "Message must be shorter"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


class _OneTooLongThenDownClient:
    """SQS refusing every call that holds ``too_long``'s message (400), as it does for
    one message too long for the queue, and out of reach for ``down``'s, if any."""

    def __init__(self, endpoint, *, too_long, down=None):
        self.client = sqs_client(endpoint)
        self.too_long, self.down = str(too_long), str(down)
        self.calls = 0

    def get_queue_url(self, **kwargs):
        return self.client.get_queue_url(**kwargs)

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803 - boto3's argument names
        self.calls += 1
        ids = {entry["Id"] for entry in Entries}
        if self.too_long in ids:
            raise _bad_request("SendMessageBatch")
        if self.down in ids:
            raise EndpointConnectionError(endpoint_url=QueueUrl)
        return self.client.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def test_sqs_failing_while_a_refused_call_is_sent_one_by_one_is_an_outage(sqs_queue, settings):
    # The rest of the call's messages went one by one, each tried three times, and the
    # first error decided: SQS out of reach was taken for a refused queue.
    settings.SCHEDULER_BATCH_SIZE = 10
    with freeze_time(T0):
        too_long, sent, down = make_jobs([T0 - timedelta(minutes=m) for m in (3, 2, 1)])
        make_jobs([T0] * 7)
        client = _OneTooLongThenDownClient(
            settings.SCHEDULER_SQS_ENDPOINT_URL, too_long=too_long.pk, down=down.pk
        )
        result = Dispatcher(publisher=SQSPublisher(client=client)).run_once()
    assert (result.sent, result.failed, result.outage) == (1, 9, True)
    assert any("EndpointConnectionError" in error for error in result.errors)
    assert set(ScheduledJob.objects.filter(status=Status.ENQUEUED)) == {sent}
    # The call, then one each for the first three, three tries for the one out of reach.
    assert client.calls == 1 + 2 + 3


class _SlowClient:
    """SQS taking ``seconds`` to answer each call."""

    def __init__(self, endpoint, seconds):
        self.client = sqs_client(endpoint)
        self.seconds = seconds

    def get_queue_url(self, **kwargs):
        return self.client.get_queue_url(**kwargs)

    def send_message_batch(self, **kwargs):
        time.sleep(self.seconds)
        return self.client.send_message_batch(**kwargs)


def test_a_publish_starts_no_call_past_its_time(sqs_queue, settings, monkeypatch):
    # Its calls one after another, a slow SQS held the batch's rows (and the claim's
    # transaction, which PostgreSQL ends once idle too long) for as long as they took.
    monkeypatch.setattr(publisher_module, "PUBLISH_SECONDS", 0.3)
    settings.SCHEDULER_BATCH_SIZE = 30
    make_jobs([datetime.now(UTC) - timedelta(seconds=1)] * 30)
    publisher = SQSPublisher(client=_SlowClient(settings.SCHEDULER_SQS_ENDPOINT_URL, 0.2))
    publisher.concurrency = SendConcurrency(1)
    result = Dispatcher(publisher=publisher).run_once()
    assert (result.sent, result.failed, result.outage) == (20, 10, True)
    assert any("TimeoutError" in error for error in result.errors)
    assert ScheduledJob.objects.filter(status=Status.ENQUEUED).count() == 20


def test_the_claims_idle_limit_is_the_dispatchers_alone():
    # run_due_jobs() claims in a test's transaction: a test stopped in a debugger for
    # two minutes lost its connection.
    make_jobs([datetime.now(UTC)] * 2)
    with connection.cursor() as cursor:
        assert dispatching.dispatch_due(now=datetime.now(UTC), limit=10)
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone() == ("0",)
