"""Shared fixtures: a real SQS server (moto, over HTTP) and per-test queues."""

import base64
import contextlib
import json
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from celery import Task, current_app
from celery import signals as celery_signals
from django.db import connections, transaction
from django.utils import timezone
from hypothesis import settings as hypothesis_settings
from kombu import Connection
from psycopg2 import sql

from scheduler.dispatch.publisher import OutgoingMessage, PublishResult, SQSPublisher
from tests.processes import ROOT, free_port, postgres_processes, start_sqs_server

#: The Django 6.0 leg's (``make test-django6``): the same properties with fewer examples
#: each. The main leg's hundred explore the inputs; this leg shows that they hold on the
#: other Django version's forms and ORM.
hypothesis_settings.register_profile("django6", max_examples=10)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP (a cancelled CI job, `make test`'s runner told to stop) end the
    run as Ctrl-C does, through every fixture's teardown: pytest, which has no handler of
    its own, died at once, and left the workers, beat and SQS server the fixtures had
    started in sessions of their own, still connected to the test database, which the
    next run could not create again."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)


@pytest.fixture(autouse=True)
def own_signal_handlers() -> Iterator[None]:
    """The test process's handlers of its stop signals, as they were, after each test:
    honcho's (``make run``'s tests) and a ``DispatchingScheduler``'s (built in the main
    thread, it handles them as beat's) would keep Ctrl-C and a cancelled CI job's SIGTERM."""
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {signum: signal.getsignal(signum) for signum in stop_signals}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.fixture(autouse=True)
def offline_sqs(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches Amazon SQS: unless it asks for the local server, nothing answers.

    (The admin's monitoring page looks at the dead-letter queue on every load.)
    """
    _sqs_at("http://127.0.0.1:9", settings, monkeypatch)


def _sqs_at(endpoint: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the scheduler and Celery's broker at the SQS server at ``endpoint``, as
    project/settings.py does from SQS_ENDPOINT_URL (scheduler.E025 compares them)."""
    settings.SCHEDULER_SQS_ENDPOINT_URL = endpoint
    host = endpoint.removeprefix("http://")
    monkeypatch.setattr(current_app.conf, "broker_url", f"sqs://local:local@{host}")


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """A moto SQS server in its own process, so freezegun cannot stop its clock.

    Ready once it says it bound its port and answers there; its exit fails the start at
    once (on another free port if the one chosen was taken meanwhile).
    """
    process, port = start_sqs_server()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """The task name, headers and properties of every Celery message this process
    publishes during the test."""
    sent: list[dict[str, Any]] = []

    def receive(
        sender: str | None = None,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        sent.append({"task": sender, "headers": dict(headers or {}), "properties": properties})

    celery_signals.before_task_publish.connect(receive, weak=False)
    yield sent
    celery_signals.before_task_publish.disconnect(receive)


@pytest.fixture
def broker(sqs_endpoint: str) -> Iterator[Connection]:
    """A kombu connection to the SQS server, as the project configures Celery's broker,
    for the Celery messages the test process itself publishes."""
    host = sqs_endpoint.removeprefix("http://")
    with Connection(
        f"sqs://local:local@{host}", transport_options={"region": "us-east-1", "is_secure": False}
    ) as connection:
        yield connection


@dataclass
class SqsQueue:
    """A fresh queue on the SQS server, for one test."""

    name: str
    url: str
    client: Any

    def receive(
        self, *, wait: int = 0, max_messages: int = 10, keep: bool = False
    ) -> list[dict[str, Any]]:
        """Receive and delete visible messages; each decoded to its Celery envelope.

        With ``keep``, they are hidden for a minute instead of deleted: a call for ten,
        to read a thousand.
        """
        hidden = {"VisibilityTimeout": 60} if keep else {}
        response = self.client.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait, **hidden
        )
        messages = response.get("Messages", [])
        for message in [] if keep else messages:
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return [decode(message["Body"]) for message in messages]

    def count(self) -> int:
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesDelayed",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())


def sqs_client(endpoint: str) -> Any:
    """A boto3 SQS client of the caller's own for the test SQS server."""
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def decode(body: str) -> dict[str, Any]:
    envelope = json.loads(base64.b64decode(body))
    envelope["decoded_body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


@pytest.fixture
def sqs_queue(sqs_endpoint: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> SqsQueue:
    """Points the app at the SQS server and a queue of its own."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    _sqs_at(sqs_endpoint, settings, monkeypatch)
    settings.SCHEDULER_QUEUE_NAME = name
    # As project/settings.py ties Celery's default queue to it: a long Celery call's job
    # goes there (the queue its message would), which the test's workers consume.
    monkeypatch.setitem(current_app.conf, "task_default_queue", name)
    client = sqs_client(sqs_endpoint)
    url = client.create_queue(QueueName=name)["QueueUrl"]
    return SqsQueue(name=name, url=url, client=client)


class RecordingPublisher(SQSPublisher):
    """The real publisher, also keeping what it was asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[OutgoingMessage] = []

    def publish(self, messages: Any) -> PublishResult:
        self.published.extend(messages)
        return super().publish(messages)


@pytest.fixture
def publisher(sqs_queue: SqsQueue) -> RecordingPublisher:
    return RecordingPublisher()


@contextlib.contextmanager
def postgresql_out_of_reach() -> Iterator[None]:
    """This process's default connection reaches no PostgreSQL until the block ends, as
    in a failover: it connects to a port nothing listens on (needs a transactional test)."""
    connection = connections["default"]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


@contextlib.contextmanager
def connection_to_a_reader() -> Iterator[None]:
    """This process's default connection reaches a server that takes no writes, as in a
    failover (Aurora's): the old primary, a reader now, keeps the connections it had and
    refuses their writes (SQLSTATE 25006); a new connection reaches the new primary.
    Needs a transactional test."""
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION default_transaction_read_only = on")
    try:
        yield
    finally:
        connection.close()


def job_row_held_elsewhere(
    job_id: int, *, change: Callable[[], object] | None = None, commit_after: float | None = None
) -> AbstractContextManager[None]:
    """Another connection holds the job's row (``SELECT … FOR UPDATE``, as a worker's
    claim does for a moment; or ``change()``, a write that locks it) until the block ends,
    or until ``commit_after`` seconds into it (needs a transactional test)."""
    # Not at the top: the benchmarks import this module before Django is set up.
    from scheduler.models import ScheduledJob

    def lock_the_row() -> None:
        ScheduledJob.objects.select_for_update().get(pk=job_id)

    return held_elsewhere(change or lock_the_row, commit_after=commit_after)


@contextlib.contextmanager
def held_elsewhere(
    take: Callable[[], object], *, commit_after: float | None = None
) -> Iterator[None]:
    """Another connection's transaction holds the locks ``take()`` takes until the block
    ends, or until ``commit_after`` seconds into it (needs a transactional test)."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                take()
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10), "the locks were not taken"
        if commit_after is not None:
            threading.Timer(commit_after, release.set).start()
        yield
    finally:
        release.set()
        thread.join(30)


@pytest.fixture
def database_clock_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """``/metrics`` and the monitoring page judge at the host's clock, not PostgreSQL's,
    which freezegun cannot stop: figures of a data set laid out at a frozen instant."""
    from scheduler.admin import monitoring
    from scheduler.integrations import metrics
    from scheduler.models import read_from_indexes

    @contextlib.contextmanager
    def _read_at_the_host_clock(**settings: Any) -> Iterator[datetime]:
        with read_from_indexes(**settings):
            yield timezone.now()

    for module in (metrics, monitoring):
        monkeypatch.setattr(module, "read_from_indexes", _read_at_the_host_clock)


def query_plan(sql: str) -> str:
    """PostgreSQL's plan for ``sql`` (``EXPLAIN``), on this process's default connection."""
    with connections["default"].cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(line for (line,) in cursor.fetchall())


@pytest.fixture(scope="module")
def emptied_afterwards(django_db_blocker: Any) -> Iterator[None]:
    """Once the module's tests end, the job tables are emptied of the rows they wrote.

    For modules that insert tens of thousands of rows: rolled back, those stay in the
    tables' pages and indexes until a VACUUM, and every later test reads past them (the
    fuzz tests took 4.5 times as long after the admin's page costs). Between tests the
    tables are empty, so a TRUNCATE, quicker than a VACUUM, leaves them as they were.
    """
    yield
    with django_db_blocker.unblock(), connections["default"].cursor() as cursor:
        cursor.execute(
            "TRUNCATE scheduler_scheduledjob, scheduler_jobattempt, scheduler_auditentry, "
            "payments_payment"
        )


@pytest.fixture
def long_named_task() -> Iterator[Task[Any, Any]]:
    """A registered task whose name is past the 255 characters a job's task_name holds."""
    name = "testapp." + "long" * 62

    @current_app.task(name=name, shared=False)  # no other app gets it
    def long_named() -> None:
        """Does nothing."""

    yield long_named
    current_app.tasks.pop(name)


@pytest.fixture
def new_database_url() -> Iterator[str]:
    """A database URL whose database does not exist yet; dropped afterwards."""
    db = connections["default"].settings_dict
    name = f"longdelay_new_{uuid.uuid4().hex[:10]}"
    yield f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}"
    admin = psycopg2.connect(
        dbname="postgres", user=db["USER"], host=db["HOST"], port=db["PORT"] or None
    )
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh embedded PostgreSQL data folder under .data/, removed afterwards, with
    any server still serving it."""
    path = ROOT / ".data" / f"test-{uuid.uuid4().hex[:8]}"
    yield path
    for pid in postgres_processes(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)
