"""System checks: the scheduler's settings must respect SQS's limits and each other; its
tables live on the default database, with aware datetimes, on a connection that gives
up on a primary that stopped answering; no model keeps finished jobs from being purged.

Celery's worker and beat run them as they start, and refuse to start on an error
(:func:`check_before_start`), as ``manage.py`` commands such as ``scheduler_dispatch`` do;
a WSGI application refuses to load (:func:`check_before_serving`).
"""

import os
from collections.abc import Callable, Sequence
from typing import Any

from celery.signals import beat_init, worker_init
from celery.utils.imports import symbol_by_name
from django.apps import AppConfig, apps
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.management.base import BaseCommand, SystemCheckError
from django.db import DEFAULT_DB_ALIAS, connections, models, router

from scheduler.conf import SQS_MAX_DELAY_SECONDS, SchedulerSettings, scheduler_settings
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.registry import schedulable_task_names
from scheduler.sqs import dead_letter_queue, region
from scheduler.validation import is_valid_queue_name

# Each relation between settings: its check id, when it is broken, and why that matters.
_RELATIONS: tuple[
    tuple[str, Callable[[SchedulerSettings], bool], Callable[[SchedulerSettings], str]], ...
] = (
    (
        "scheduler.E002",
        lambda s: s.MAX_DELAY_SECONDS > SQS_MAX_DELAY_SECONDS,
        lambda s: (
            f"SCHEDULER_MAX_DELAY_SECONDS is {s.MAX_DELAY_SECONDS}; SQS accepts at most "
            f"{SQS_MAX_DELAY_SECONDS}."
        ),
    ),
    (
        "scheduler.E003",
        lambda s: s.LOOKAHEAD_SECONDS > s.MAX_DELAY_SECONDS,
        lambda s: (
            f"SCHEDULER_LOOKAHEAD_SECONDS ({s.LOOKAHEAD_SECONDS}) must not exceed "
            f"SCHEDULER_MAX_DELAY_SECONDS ({s.MAX_DELAY_SECONDS}): a job sent earlier than SQS "
            "can hold it back would start early."
        ),
    ),
    (
        "scheduler.E004",
        # A job that comes into the lookahead just after a tick is sent at the next one,
        # with the lookahead less an interval left: less than the lead, SQS releases it
        # late.
        lambda s: s.DISPATCH_INTERVAL_SECONDS + s.DELIVERY_LEAD_SECONDS > s.LOOKAHEAD_SECONDS,
        lambda s: (
            f"SCHEDULER_DISPATCH_INTERVAL_SECONDS ({s.DISPATCH_INTERVAL_SECONDS}) plus "
            f"SCHEDULER_DELIVERY_LEAD_SECONDS ({s.DELIVERY_LEAD_SECONDS}) must be at most "
            f"SCHEDULER_LOOKAHEAD_SECONDS ({s.LOOKAHEAD_SECONDS}), or jobs reach SQS less "
            "than the lead before they are due, or after."
        ),
    ),
    (
        "scheduler.E005",
        lambda s: s.RETRY_BACKOFF_MAX_SECONDS < s.RETRY_BACKOFF_SECONDS,
        lambda s: (
            f"SCHEDULER_RETRY_BACKOFF_MAX_SECONDS ({s.RETRY_BACKOFF_MAX_SECONDS}) must "
            f"be at least SCHEDULER_RETRY_BACKOFF_SECONDS ({s.RETRY_BACKOFF_SECONDS})."
        ),
    ),
    (
        "scheduler.E007",
        lambda s: s.HEARTBEAT_INTERVAL_SECONDS * 3 > s.LEASE_SECONDS,
        lambda s: (
            f"SCHEDULER_HEARTBEAT_INTERVAL_SECONDS ({s.HEARTBEAT_INTERVAL_SECONDS}) must "
            f"be at most a third of SCHEDULER_LEASE_SECONDS ({s.LEASE_SECONDS}), or one "
            "missed heartbeat makes a live job look dead."
        ),
    ),
    (
        "scheduler.E008",
        lambda s: s.DELIVERY_LEAD_SECONDS >= s.LOOKAHEAD_SECONDS,
        lambda s: (
            f"SCHEDULER_DELIVERY_LEAD_SECONDS ({s.DELIVERY_LEAD_SECONDS}) must be less "
            f"than SCHEDULER_LOOKAHEAD_SECONDS ({s.LOOKAHEAD_SECONDS})."
        ),
    ),
    (
        "scheduler.E009",
        # SQS delays whole seconds, rounded down: a message may come a second more ahead.
        lambda s: s.SQS_VISIBILITY_TIMEOUT_SECONDS <= 2 * s.DELIVERY_LEAD_SECONDS + 1,
        lambda s: (
            f"SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS ({s.SQS_VISIBILITY_TIMEOUT_SECONDS}) "
            "must be more than twice SCHEDULER_DELIVERY_LEAD_SECONDS "
            f"({s.DELIVERY_LEAD_SECONDS}) plus a second: a worker holds a job's message "
            "unacknowledged until its eta, and SQS would hand it to another worker meanwhile."
        ),
    ),
    (
        "scheduler.E012",
        lambda s: s.RECOVERY_INTERVAL_SECONDS > s.LEASE_SECONDS,
        lambda s: (
            f"SCHEDULER_RECOVERY_INTERVAL_SECONDS ({s.RECOVERY_INTERVAL_SECONDS}) must be at "
            f"most SCHEDULER_LEASE_SECONDS ({s.LEASE_SECONDS}): a dead worker's job waits "
            "for recovery to retry it."
        ),
    ),
)


@register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Validate every ``SCHEDULER_*`` setting and the relations between them."""
    errors: list[CheckMessage] = []
    for setting in SchedulerSettings.all_settings():
        value = setting.raw()
        if not setting.is_valid(value):
            errors.append(
                Error(
                    f"{setting.setting_name} must be {setting.expected}, "
                    f"got {setting.shown(value)}.",
                    hint=setting.help_text,
                    id=setting.error_id,
                )
            )
    if errors:
        return errors

    s = scheduler_settings
    return [Error(message(s), id=check_id) for check_id, broken, message in _RELATIONS if broken(s)]


@register(Tags.security, deploy=True)
def check_metrics_token(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn, for a deployment, that /metrics answers anyone without a token."""
    if scheduler_settings.METRICS_TOKEN is not None:
        return []
    return [
        Warning(
            "SCHEDULER_METRICS_TOKEN is not set: /metrics answers anyone who reaches the "
            "web server (task and queue names, hosts, failure rates), and each request "
            "runs its queries.",
            hint="Set SCHEDULER_METRICS_TOKEN and give Prometheus it as its bearer token; "
            "or silence scheduler.W005 where only Prometheus reaches /metrics.",
            id="scheduler.W005",
        )
    ]


@register()
def check_dead_letter_room(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when ``SCHEDULER_QUEUE_NAME`` leaves no room for its dead-letter queue's name."""
    name = scheduler_settings.QUEUE_NAME
    dead_letters = dead_letter_queue(name)
    if not is_valid_queue_name(name) or is_valid_queue_name(dead_letters):
        return []  # a name that is no queue's is scheduler.E006
    return [
        Warning(
            f"SCHEDULER_QUEUE_NAME is {len(name)} characters: its dead-letter queue, "
            f"{dead_letters!r}, would be over SQS's 80. scheduler_create_queue "
            "refuses it, and the dead-letter metric and alert watch that queue.",
            hint="Use a name of at most 76 characters.",
            id="scheduler.W006",
        )
    ]


@register()
def check_sqs_region(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """The app's SQS client needs a region, even for an SQS-compatible server's endpoint:
    botocore refuses to build one without."""
    # One set but not a region's name is scheduler.E001's.
    if scheduler_settings.SQS_REGION is not None or region() is not None:
        return []
    return [
        Error(
            "SCHEDULER_SQS_REGION is None and boto3 finds no AWS region (AWS_DEFAULT_REGION, "
            "the AWS config file): the dispatcher could send no job (NoRegionError at "
            "every tick), nor scheduler_create_queue make a queue, while Celery's workers "
            "poll kombu's default, us-east-1, unless its region transport option names one.",
            hint="Set SCHEDULER_SQS_REGION to the queues' region, and Celery's region "
            "transport option to the same.",
            id="scheduler.E013",
        )
    ]


@register()
def check_admin_tasks(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """``SCHEDULER_ADMIN_TASKS`` must list registered, schedulable task names."""
    value = scheduler_settings.admin_tasks_raw()
    if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
        return [
            Error(
                f"SCHEDULER_ADMIN_TASKS must be a list of task names, got {value!r}.",
                id="scheduler.E010",
            )
        ]
    known = set(schedulable_task_names())
    return [
        Error(
            f"SCHEDULER_ADMIN_TASKS names {name!r}, which is not a registered Celery task "
            "that jobs may run.",
            hint="Check the spelling, or that the app defining the task is installed.",
            id="scheduler.E011",
        )
        for name in value
        if name not in known
    ]


@register()
def check_database(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Jobs' times are aware datetimes, and their tables on the default database, whose
    connection the services, the dispatcher and the workers share with the caller's
    transaction."""
    errors: list[CheckMessage] = []
    if not scheduler_settings.uses_time_zones():
        errors.append(
            Error(
                "USE_TZ is False: a job's run_at is an aware datetime, and the dispatcher "
                "cannot compare the naive times Django would read back with it.",
                hint="Set USE_TZ = True (Django's default).",
                id="scheduler.E040",
            )
        )
    models = list(apps.get_app_config("scheduler").get_models())
    routed = {router.db_for_write(model) for model in models}
    routed |= {router.db_for_read(model) for model in models}
    elsewhere = ", ".join(repr(alias) for alias in sorted(routed - {DEFAULT_DB_ALIAS}))
    if elsewhere:
        errors.append(
            Error(
                f"A database router sends the scheduler's models to {elsewhere}: the "
                "scheduler's services, dispatcher and workers work on the default "
                "database, in the caller's transaction on it.",
                hint="Leave the scheduler app's models on the default database (a router "
                "returns None for them).",
                id="scheduler.E041",
            )
        )
    return errors


#: libpq's parameters that bound how long a connection to a silent server waits.
DATABASE_TIMEOUTS = ("connect_timeout", "keepalives_idle", "tcp_user_timeout")


@register()
def check_database_timeouts(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when the jobs' PostgreSQL connection would wait minutes on a lost primary."""
    database = connections[router.db_for_write(ScheduledJob)].settings_dict
    if "postgresql" not in database["ENGINE"]:
        return []
    missing = [name for name in DATABASE_TIMEOUTS if name not in database.get("OPTIONS", {})]
    if not missing:
        return []
    return [
        Warning(
            f"The jobs' database connection sets no {', '.join(missing)}: once a failover "
            "has lost the primary with its host, a query on a connection to it waits out "
            "the kernel's TCP retransmissions (about 15 minutes), and a dispatcher tick or "
            "a worker's heartbeat with it.",
            hint="Add them to the database's OPTIONS, e.g. connect_timeout=5, "
            "keepalives_idle=10, keepalives_interval=5, keepalives_count=3, "
            "tcp_user_timeout=15000 (milliseconds).",
            id="scheduler.W003",
        )
    ]


#: What the purge deletes: finished jobs, and their attempts with them.
_PURGED_MODELS = (ScheduledJob, JobAttempt)


def _target(field: "models.ForeignKey[Any, Any]") -> type[models.Model] | None:
    """The concrete model ``field`` references (a proxy of a job is the job's row)."""
    related = field.related_model
    if not (isinstance(related, type) and issubclass(related, models.Model)):
        return None
    return related._meta.concrete_model


def _foreign_keys(
    model_list: Sequence[type[models.Model]],
) -> list[tuple[type[models.Model], "models.ForeignKey[Any, Any]"]]:
    return [
        (model, field)
        for model in model_list
        for field in model._meta.local_fields
        if isinstance(field, models.ForeignKey)
    ]


def _purged(model_list: Sequence[type[models.Model]]) -> set[type[models.Model]]:
    """The models whose rows the purge deletes: the jobs and their attempts, and, as far
    as ``on_delete=CASCADE`` goes, the rows of models that reference them."""
    purged: set[type[models.Model]] = set(_PURGED_MODELS)
    keys = _foreign_keys(model_list)
    while True:
        more = {
            concrete
            for model, field in keys
            if field.remote_field.on_delete is models.CASCADE
            and _target(field) in purged
            and (concrete := model._meta.concrete_model) is not None
        } - purged
        if not more:
            return purged
        purged |= more


@register()
def check_purge_not_blocked(
    app_configs: Sequence[AppConfig] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when a model's foreign key would make every purge of finished jobs fail: one
    to a job, or to a row the purge deletes with it (a CASCADE from a job)."""
    configs = apps.get_app_configs() if app_configs is None else app_configs
    model_list = [model for config in configs for model in config.get_models()]
    purged = _purged([*model_list, *apps.get_models()])
    warnings: list[CheckMessage] = []
    for model, field in _foreign_keys(model_list):
        target = _target(field)
        if target not in purged:
            continue
        on_delete = field.remote_field.on_delete
        # DO_NOTHING leaves the database's own constraint to refuse the delete.
        constrained = getattr(field, "db_constraint", True)
        if not (
            on_delete in (models.PROTECT, models.RESTRICT)
            or (on_delete is models.DO_NOTHING and constrained)
        ):
            continue
        row = (
            target.__name__
            if target in _PURGED_MODELS
            else f"{target._meta.label} (the purge deletes it with the job it references)"
        )
        warnings.append(
            Warning(
                f"{model._meta.label}.{field.name} keeps the {row} it references from "
                f"being deleted (on_delete={on_delete.__name__}): the dispatcher's "
                "hourly purge of jobs finished SCHEDULER_RETENTION_DAYS ago fails while "
                "one of them is referenced, and purges nothing.",
                hint="Use on_delete=models.SET_NULL, as the demo's Payment.capture_job "
                "does (models.CASCADE would delete your row with the job).",
                obj=field,
                id="scheduler.W004",
            )
        )
    return warnings


def names_subclass(configured: str, base: type) -> bool:
    """Whether a Celery setting (a class, or its ``module:Name``) is ``base`` or a subclass.

    For the checks of Celery settings that should name one of the app's classes; a name
    that does not import is not.
    """
    try:
        value = symbol_by_name(configured)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(value, type) and issubclass(value, base)


#: The checks of :func:`check_before_start` this process ran already: their tags and
#: databases (``((), ())`` for the whole set).
_checked_before_start: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()


def check_before_start(
    *, tags: Sequence[str] | None = None, databases: Sequence[str] | None = None
) -> None:
    """Run Django's system checks as a management command runs them before it starts
    (``BaseCommand.check``, as for ``scheduler_dispatch``), and exit this process with
    status 1 when one reports an error.

    Every message is printed to stderr as ``manage.py check`` prints it; warnings alone
    let the process go on. ``tags`` and ``databases`` are ``BaseCommand.check``'s: the
    checks that ask ``databases`` run only when given them, as ``migrate`` gives its own.
    Once per process and set of checks: the beat a worker embeds (``worker -B``) and
    a beat's own two hooks find it done. Skipped when ``CELERY_SKIP_CHECKS`` is set, the
    variable with which Celery skips the checks it runs (and ignores) at start-up.
    """
    key = (tuple(tags or ()), tuple(databases or ()))
    if key in _checked_before_start or os.environ.get("CELERY_SKIP_CHECKS"):
        return
    _checked_before_start.add(key)
    command = BaseCommand()
    try:
        command.check(tags=tags, databases=databases)
    except SystemCheckError as error:
        # As manage.py reports it (BaseCommand.run_from_argv): the report, no traceback.
        command.stderr.write(str(error), lambda text: text)
        raise SystemExit(error.returncode) from None


def check_before_serving() -> None:
    """Run Django's system checks as a WSGI or ASGI application loads; raise
    ``SystemCheckError`` when one reports an error.

    A web server runs no check of its own. Raising (not exiting as
    :func:`check_before_start` does) is what makes a server give up: gunicorn halts with
    "Worker failed to boot", where a worker that exits is started again, and again.
    Warnings are printed to stderr and the application loads.
    """
    BaseCommand().check()


@worker_init.connect(weak=False)
@beat_init.connect(weak=False)
def _check_before_celery_starts(**_: Any) -> None:
    """``worker_init`` (sent in the worker's main process, before its pool, consumer and
    embedded beat start) and ``beat_init`` (before beat's first tick): check first.

    A beat with the scheduler's ``DispatchingScheduler`` checks earlier still, before it
    writes the dispatch schedule.
    """
    check_before_start()
