"""System checks of the worker side: jobs run only through the scheduler's Task class,
and the worker survives SQS failures and bad messages, on database connections kept
from task to task; and, as it starts consuming, its queues' attributes."""

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import boto3
from celery import current_app
from celery.signals import worker_init, worker_ready
from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, connections, router

# Django's one name for both drivers' levels; django-stubs has no stub of it.
from django.db.backends.postgresql.psycopg_any import IsolationLevel  # type: ignore[import-untyped]
from kombu.transport import SQS

from scheduler.checks import check_before_start, names_subclass
from scheduler.conf import scheduler_settings
from scheduler.models import ScheduledJob
from scheduler.queue_needs import check_queues
from scheduler.registry import get_task, schedulable_task_names, sqs_queue_of
from scheduler.validation import is_valid_queue_name
from scheduler.worker import consumer, transport
from scheduler.worker.task import SchedulerTask

_TASK_CLS = "scheduler.worker.task:SchedulerTask"


@register()
def check_task_class(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """The Celery app's Task class, and each schedulable task's, must be SchedulerTask.

    Otherwise a job's message runs the task's body with no arguments and no claim.
    """
    app_task_class = current_app.Task
    if not issubclass(app_task_class, SchedulerTask):
        return [
            Error(
                f"The Celery app {current_app.main!r} creates tasks of class "
                f"{app_task_class.__module__}.{app_task_class.__qualname__}, not the "
                "scheduler's SchedulerTask: a job's message would run without its claim "
                "and arguments.",
                hint=f'Create the app with Celery(..., task_cls="{_TASK_CLS}").',
                id="scheduler.E020",
            )
        ]
    return [
        Error(
            f"The task {name!r} does not derive from SchedulerTask (another base= was "
            "given): its jobs cannot run.",
            hint="Give it a base class that derives from scheduler.worker.task.SchedulerTask.",
            id="scheduler.E021",
        )
        for name in schedulable_task_names()
        if not isinstance(get_task(name), SchedulerTask)
    ]


def _isolation_level(alias: str, *, ask_server: bool) -> IsolationLevel | None:
    """The level the database ``alias`` runs transactions at: its ``OPTIONS``', else,
    when ``ask_server``, the server's (``default_transaction_isolation``, set for the
    database or role) if it answers."""
    level = connections[alias].settings_dict.get("OPTIONS", {}).get("isolation_level")
    if level is not None or not ask_server:
        return None if level is None else IsolationLevel(level)
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SHOW default_transaction_isolation")
            (name,) = cursor.fetchone()
    except DatabaseError:
        return None  # the database's own check, or the process's queries, say so
    return IsolationLevel[name.upper().replace(" ", "_")]


@register(Tags.database)
def check_atomic_isolation(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Atomic tasks need the jobs' database at READ COMMITTED.

    An atomic job records its success in its body's transaction while the heartbeat
    renews the job's row from another connection: above READ COMMITTED, PostgreSQL
    refuses that success ("could not serialize access") for every job that outlives a
    heartbeat interval, at every attempt. The server's default level is asked for only
    when the check is given the database (``migrate``, ``check --database``, a worker's
    start).
    """
    atomic = [name for name in schedulable_task_names() if getattr(get_task(name), "atomic", False)]
    if not atomic:
        return []  # and no connection opened
    alias = router.db_for_write(ScheduledJob)
    level = _isolation_level(alias, ask_server=databases is not None and alias in databases)
    if level is None or level not in (IsolationLevel.REPEATABLE_READ, IsolationLevel.SERIALIZABLE):
        return []
    return [
        Error(
            f"The database {alias!r} runs transactions at {level.name}, and "
            f"tasks {atomic[:5]} are atomic: a job of one that runs longer than "
            "SCHEDULER_HEARTBEAT_INTERVAL_SECONDS cannot record its success (the heartbeat "
            "has changed its row since the body's transaction began) and fails at every "
            "attempt.",
            hint="Leave DATABASES[...]['OPTIONS']['isolation_level'] and the server's "
            "default_transaction_isolation at READ COMMITTED (both defaults), or declare "
            "those tasks without atomic=True.",
            id="scheduler.E024",
        )
    ]


@worker_init.connect(weak=False)
def _check_database_before_worker_starts(**_: Any) -> None:
    """Before a worker's pool starts: the checks that ask the jobs' database (E024 about
    its server's default level), as ``migrate`` runs them."""
    alias = router.db_for_write(ScheduledJob)
    check_before_start(tags=[Tags.database], databases=[alias])
    # The pool forks next: no child may inherit this connection.
    connections[alias].close()


@worker_ready.connect(weak=False)
def _check_queues_as_worker_consumes(sender: Any, **_: Any) -> None:
    """As the worker starts consuming: each SQS queue it polls that may carry jobs (not a
    FIFO queue, which takes no per-message delay) against what jobs need, read once.

    Warned of, not refused, as the W checks are: jobs still run on such a queue, a few
    late or dead-lettered early, and the worker's own IAM policy may not let it look.
    """
    if _sqs_transport() is None:
        return
    polled = [sqs_queue_of(queue) for queue in sender.task_consumer.queues]
    check_queues([queue for queue in polled if is_valid_queue_name(queue)], process="worker")


def _sqs_transport() -> type[SQS.Transport] | None:
    """The broker's transport class if it is SQS (resolving it opens no connection)."""
    try:
        with current_app.connection_for_read() as connection:
            transport_cls = connection.get_transport_cls()
    except (ImportError, AttributeError, KeyError, ValueError):
        return None  # Celery itself reports a transport it cannot load
    return transport_cls if issubclass(transport_cls, SQS.Transport) else None


@register()
def check_broker_transport(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when Celery's broker is SQS through kombu's own transport."""
    transport_cls = _sqs_transport()
    if transport_cls is None or issubclass(transport_cls, transport.Transport):
        return []
    return [
        Warning(
            f"Celery's broker is Amazon SQS through {transport_cls.__module__}."
            f"{transport_cls.__qualname__}: a worker exits when a ReceiveMessage fails "
            "(SQS restarting, a 5xx) or a message's envelope cannot be read.",
            hint=f'Set CELERY_BROKER_TRANSPORT = "{transport.TRANSPORT}".',
            id="scheduler.W020",
        )
    ]


#: kombu's SQS transport options that make a worker poll other queues than the named ones.
_QUEUE_RENAMING_OPTIONS = ("queue_name_prefix", "predefined_queues")


@register()
def check_broker_transport_options(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Workers must poll the queues the dispatcher sends to, by their own names."""
    options = current_app.conf.broker_transport_options or {}
    return [
        Error(
            f"CELERY_BROKER_TRANSPORT_OPTIONS sets {option!r}: the workers would poll "
            "other queues than the ones the dispatcher sends jobs to, by their names in "
            "the caller's account, and no job would run.",
            hint="Remove it; name each queue in full (SCHEDULER_QUEUE_NAME, a job's queue).",
            id="scheduler.E022",
        )
        for option in _QUEUE_RENAMING_OPTIONS
        if options.get(option)
    ]


@register()
def check_broker_sqs_location(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """The workers poll SQS in the region, and at the endpoint, the dispatcher sends to.

    Each reads its own settings: the dispatcher ``SCHEDULER_SQS_REGION`` and
    ``SCHEDULER_SQS_ENDPOINT_URL``, kombu its ``region`` transport option and the broker
    URL's host. Where they differ, the dispatcher's sends succeed into a queue no worker
    polls (``scheduler_create_queue`` made it there), and every job stays enqueued.
    """
    if _sqs_transport() is None:
        return []
    options = current_app.conf.broker_transport_options or {}
    default_region = boto3.Session().region_name
    workers = options.get("region") or default_region or SQS.Channel.default_region
    dispatcher = scheduler_settings.SQS_REGION or default_region
    found: list[CheckMessage] = []
    if dispatcher and workers != dispatcher:
        found.append(_elsewhere(f"in region {workers!r}", f"to region {dispatcher!r}", "region"))
    broker = urlsplit(current_app.conf.broker_url or "")
    endpoint = urlsplit(scheduler_settings.SQS_ENDPOINT_URL or "")
    polled, sent_to = (broker.hostname, broker.port), (endpoint.hostname, endpoint.port)
    # Every AWS endpoint of a region (regional, FIPS, a VPC endpoint) reaches its queues.
    aws = (_aws_region(polled[0], workers), _aws_region(sent_to[0], dispatcher or workers))
    same_server = (_loopback(polled[0]), polled[1]) == (_loopback(sent_to[0]), sent_to[1])
    if not same_server and (None in aws or aws[0] != aws[1]):
        found.append(
            _elsewhere(
                f"at {_where(*polled)} (the broker URL's host)",
                f"to {_where(*sent_to)} (SCHEDULER_SQS_ENDPOINT_URL)",
                "endpoint",
            )
        )
    return found


#: The names of this host's loopback interface: one SQS server on it, whichever names it.
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _loopback(host: str | None) -> str | None:
    """``host``, with each name of the loopback interface made one (no DNS lookup)."""
    return "localhost" if host in _LOOPBACK else host


def _aws_region(host: str | None, region: str) -> str | None:
    """The AWS region whose queues an SQS endpoint's host reaches (``region``, the
    client's, for the default endpoint, no host), or None for a host not Amazon's."""
    if host is None:
        return region
    if not host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws")):
        return None
    # sqs.eu-west-1.amazonaws.com, sqs-fips.…, vpce-….sqs.eu-west-1.vpce.amazonaws.com
    labels = host.split(".")
    named = [labels[i + 1] for i in range(len(labels) - 1) if labels[i] in ("sqs", "sqs-fips")]
    return named[0] if named else region


def _where(host: str | None, port: int | None) -> str:
    """An SQS endpoint's host and port as a check names them; AWS's own without a host."""
    if host is None:
        return "AWS's endpoint"
    return host if port is None else f"{host}:{port}"


def _elsewhere(polled: str, sent_to: str, what: str) -> Error:
    return Error(
        f"The workers poll SQS {polled}, the dispatcher sends jobs {sent_to}: no job "
        "would run, each left enqueued and sent again.",
        hint=f"Give Celery's broker and the scheduler the same SQS {what} "
        "(CELERY_BROKER_TRANSPORT_OPTIONS['region'] and SCHEDULER_SQS_REGION; the "
        "broker URL's host and SCHEDULER_SQS_ENDPOINT_URL).",
        id="scheduler.E025",
    )


#: kombu's SQS transport options that the scheduler's settings give the queues, with the
#: setting, and kombu's value when the option is unset.
_QUEUE_TIMINGS = (
    (
        "visibility_timeout",
        "SQS_VISIBILITY_TIMEOUT_SECONDS",
        SQS.Channel.default_visibility_timeout,
    ),
    ("wait_time_seconds", "SQS_WAIT_TIME_SECONDS", SQS.Channel.default_wait_time_seconds),
)


@register()
def check_broker_timings(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when the workers' SQS timings are not the queues' (``SCHEDULER_SQS_*``).

    A queue a worker creates (one ``scheduler_create_queue`` has not made yet) gets the
    transport's visibility timeout, and a worker's receives wait the transport's long
    poll whatever the queue says.
    """
    if _sqs_transport() is None:
        return []
    options = current_app.conf.broker_transport_options or {}
    return [
        Warning(
            f"CELERY_BROKER_TRANSPORT_OPTIONS[{option!r}] is "
            f"{repr(options[option]) if option in options else f'unset (kombu: {default})'}, "
            f"not SCHEDULER_{setting} ({getattr(scheduler_settings, setting)}): the workers "
            "would not keep the timing the scheduler gives its queues.",
            hint=f"Set it to SCHEDULER_{setting}.",
            id="scheduler.W023",
        )
        for option, setting, default in _QUEUE_TIMINGS
        if options.get(option, default) != getattr(scheduler_settings, setting)
    ]


@register()
def check_acks_late(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when tasks are acknowledged late: SQS hands a plain message of one that runs
    past the queue's visibility timeout to another worker, which runs it again.

    A job's message is fenced by its dispatch token; a plain one (a ``delay()``) is not.
    """
    if _sqs_transport() is None:
        return []
    if current_app.conf.task_acks_late:
        which = "Every task is acknowledged late (CELERY_TASK_ACKS_LATE)"
    else:
        late = [name for name in schedulable_task_names() if get_task(name).acks_late]
        if not late:
            return []
        which = f"The tasks {', '.join(map(repr, late))} are acknowledged late (acks_late)"
    return [
        Warning(
            f"{which}: a plain message of theirs (a call delayed by less than "
            "SCHEDULER_MAX_DELAY_SECONDS, or not at all) stays in SQS while the task runs, "
            "and SQS hands it to another worker "
            f"{scheduler_settings.SQS_VISIBILITY_TIMEOUT_SECONDS} s after it was received "
            "(SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS): a run longer than that runs twice, "
            "at the same time.",
            hint="Run long work as jobs (schedule_at, or a countdown beyond "
            "SCHEDULER_MAX_DELAY_SECONDS: a job's heartbeat lease covers any length, and it "
            "runs once); or raise SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS, with the "
            "visibility_timeout transport option, above the longest run; or turn acks_late "
            "off.",
            id="scheduler.W024",
        )
    ]


@register()
def check_track_started(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when jobs' tasks report STARTED to a result backend: Celery stores it before
    the worker can tell that a message is a duplicate copy, or of a job cancelled,
    expired or moved, which it then drops, and nothing takes that STARTED back."""
    conf = current_app.conf
    if not conf.result_backend:
        return []
    tracked = [
        name
        for name in schedulable_task_names()
        if (task := get_task(name)).track_started and not task.ignore_result
    ]
    if not tracked:
        return []
    return [
        Warning(
            f"The tasks {', '.join(map(repr, tracked))} report STARTED to the result "
            "backend (track_started): a job's message the worker drops (a second copy, "
            "its job cancelled, expired or moved since it was sent) has its STARTED "
            "stored over the job's state, a cancelled job's PENDING or a finished one's "
            "FAILURE, and result.get() then waits.",
            hint="Turn track_started off for them (CELERY_TASK_TRACK_STARTED), and read a "
            "job's state from ScheduledJob (status) instead.",
            id="scheduler.W025",
        )
    ]


@register()
def check_worker_consumer(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when the worker's consumer is not the scheduler's, which drops bad messages."""
    configured = current_app.conf.worker_consumer
    if names_subclass(configured, consumer.Consumer):
        return []
    return [
        Warning(
            f"Celery's worker consumer is {configured!r}: a message the worker cannot run "
            "is logged with its body over many lines, and one without a body stops the "
            "worker.",
            hint=f'Set CELERY_WORKER_CONSUMER = "{consumer.CONSUMER}".',
            id="scheduler.W021",
        )
    ]


@register()
def check_accepted_content(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Refuse a worker that does not accept JSON: every job's message is JSON (its
    arguments stay in PostgreSQL), whatever the task's serializer."""
    configured: Any = current_app.conf.accept_content or ()
    accepted = sorted(map(str, configured))
    # A serializer's name or its content type, as Celery takes either.
    if {"json", "application/json"} & set(accepted):
        return []
    return [
        Error(
            f"Celery's workers accept {accepted}, not JSON: every job's message is "
            "JSON, which they would refuse and drop, every copy, so no job would run.",
            hint="Add 'json' to CELERY_ACCEPT_CONTENT.",
            id="scheduler.E023",
        )
    ]


@register()
def check_connection_reuse(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when Celery closes the database connection around every task.

    Then every job opens a new PostgreSQL connection before its claim
    (:mod:`scheduler.worker.connections`).
    """
    if current_app.conf.get("db_reuse_max"):
        return []
    return [
        Warning(
            "CELERY_DB_REUSE_MAX is not set: Celery's worker closes the database connection "
            "before and after every task, so every job opens a new one before its claim.",
            hint="Set CELERY_DB_REUSE_MAX (e.g. 1000); the scheduler then closes a worker's "
            "connections only as Django does between requests (CONN_MAX_AGE, health checks).",
            id="scheduler.W002",
        )
    ]


@register()
def check_prefetch(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when a worker takes messages while every process is busy.

    Celery frees a message's prefetch slot as its task starts, so a worker running
    long tasks takes due jobs that then wait there (:mod:`scheduler.worker.consumer`).
    """
    if current_app.conf.worker_disable_prefetch:
        return []
    return [
        Warning(
            "CELERY_WORKER_DISABLE_PREFETCH is off: a worker whose every process runs a "
            "long task still takes messages, and due jobs wait there while another worker "
            "may be idle.",
            hint="Set CELERY_WORKER_DISABLE_PREFETCH = True (the scheduler's consumer "
            "applies it to SQS).",
            id="scheduler.W022",
        )
    ]
