"""The scheduler's settings, with their defaults, read lazily from Django settings.

This is the only module of the app that reads ``django.conf.settings``. Every value is
looked up on each access, so ``override_settings`` and the pytest ``settings`` fixture
take effect at once. Each setting knows its own type and range; ``scheduler.checks``
reports a bad value as a system-check error naming the setting.
"""

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload
from urllib.parse import urlsplit

from django.conf import settings as django_settings

from scheduler.validation import MAX_ATTEMPTS_LIMIT, is_valid_queue_name

#: SQS holds a message back at most 15 minutes (DelaySeconds 0-900).
SQS_MAX_DELAY_SECONDS = 900
#: SQS hides a received message at most 12 hours.
SQS_MAX_VISIBILITY_TIMEOUT = 12 * 3600
#: SQS long polls at most 20 seconds.
SQS_MAX_WAIT_TIME_SECONDS = 20
_DAY = 24 * 3600
#: The longest wait between two copies of an unclaimed job's message: half the one-day
#: retention of the queue (``scheduler_create_queue``), so that however long workers
#: are away, a copy is always waiting in SQS for them.
MAX_RESEND_WAIT_SECONDS = 12 * 3600
#: The longest pause of the dispatcher's ``run()`` while PostgreSQL or SQS keeps
#: failing, in dispatch intervals (30 s by default), and never more than half the
#: lookahead; the admin calls a dispatcher silent only after one more (or a minute).
#: The back-off is there so that an outage is not met with a failing batch every
#: interval; but the loop sleeps through the end of the outage, so its cap is also how
#: late a job due as soon as possible (a retry, "run now", one scheduled for now) can
#: reach SQS once the outage is over. Six intervals cut the attempts to one in six (two
#: a minute by default) and keep that lateness within half the default lease: jobs due
#: just after a failover run less than a lease late (RELIABILITY.md). Half the lookahead
#: (150 s), the cap before, made a failover of a minute or two cost such jobs up to 150
#: s more.
OUTAGE_BACKOFF_INTERVALS = 6
#: The queue jobs go to when neither the job nor ``SCHEDULER_QUEUE_NAME`` names one.
DEFAULT_QUEUE_NAME = "scheduler-jobs"

T = TypeVar("T")


class Setting(ABC, Generic[T]):
    """A ``SCHEDULER_<ATTRIBUTE>`` Django setting: its default, help and validation."""

    #: What a valid value is, for the check's message ("a positive integer").
    expected = "a value"

    def __init__(self, default: T, help_text: str, *, error_id: str = "scheduler.E001") -> None:
        self.default = default
        self.help_text = help_text
        #: The system check's id when the value is invalid.
        self.error_id = error_id
        self.setting_name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.setting_name = f"SCHEDULER_{name}"

    @overload
    def __get__(self, instance: None, owner: type) -> "Setting[T]": ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance: object | None, owner: type) -> "T | Setting[T]":
        if instance is None:
            return self
        value: Any = self.raw()
        return value  # type: ignore[no-any-return]

    #: Whether its value is a secret, which no message quotes.
    secret = False

    def raw(self) -> object:
        """The configured value, unchecked."""
        return getattr(django_settings, self.setting_name, self.default)

    def shown(self, value: object) -> str:
        """``value`` as a message may quote it: a secret's type and length only."""
        if not self.secret:
            return repr(value)
        return f"a {type(value).__name__} of {len(str(value))} characters, not shown"

    @abstractmethod
    def is_valid(self, value: object) -> bool:
        """Whether ``value`` has the right type and range."""


class PositiveInt(Setting[int]):
    """A whole number of at least 1 (not a bool, not a string)."""

    expected = "a positive integer"

    def __init__(self, default: int, help_text: str, *, maximum: int | None = None) -> None:
        super().__init__(default, help_text)
        self.maximum = maximum
        if maximum is not None:
            self.expected = f"an integer from 1 to {maximum}"

    def is_valid(self, value: object) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= 1
            and (self.maximum is None or value <= self.maximum)
        )


#: The shortest interval a seconds setting takes: less makes a tick, a beat or a
#: recovery a busy loop.
MINIMUM_SECONDS = 0.1


class PositiveSeconds(Setting[float]):
    """A finite number of seconds, at least MINIMUM_SECONDS; fractions allowed (0.5)."""

    expected = f"a number of seconds of at least {MINIMUM_SECONDS}"

    def is_valid(self, value: object) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        try:
            return math.isfinite(value) and value >= MINIMUM_SECONDS
        except OverflowError:  # an int no float holds: no number of seconds either
            return False


def _is_text(value: object, validator: Callable[[str], bool] | None) -> bool:
    """A non-empty string that ``validator`` (if any) accepts."""
    return isinstance(value, str) and bool(value) and (validator is None or validator(value))


class Text(Setting[str]):
    """A non-empty string; ``validator`` may narrow it further."""

    expected = "a non-empty string"

    def __init__(
        self,
        default: str,
        help_text: str,
        *,
        validator: Callable[[str], bool] | None = None,
        expected: str | None = None,
        error_id: str = "scheduler.E001",
    ) -> None:
        super().__init__(default, help_text, error_id=error_id)
        self.validator = validator
        self.expected = expected or self.expected

    def is_valid(self, value: object) -> bool:
        return _is_text(value, self.validator)


class OptionalText(Setting[str | None]):
    """None, or a non-empty string that ``validator`` may narrow further."""

    expected = "a non-empty string or None"

    def __init__(
        self,
        default: str | None,
        help_text: str,
        *,
        validator: Callable[[str], bool] | None = None,
        expected: str | None = None,
        secret: bool = False,
    ) -> None:
        super().__init__(default, help_text)
        self.validator = validator
        self.expected = expected or self.expected
        self.secret = secret

    def is_valid(self, value: object) -> bool:
        return value is None or _is_text(value, self.validator)


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def _is_token(value: str) -> bool:
    # It travels in an HTTP header, compared byte for byte.
    return value.isascii() and value.isprintable() and " " not in value


class SchedulerSettings:
    """The ``SCHEDULER_*`` settings, by their name without the prefix."""

    MAX_DELAY_SECONDS = PositiveInt(
        SQS_MAX_DELAY_SECONDS, "Longest per-message DelaySeconds sent to SQS (at most 900)."
    )
    LOOKAHEAD_SECONDS = PositiveInt(
        300, "How long before its run_at a job is sent to SQS (at most MAX_DELAY_SECONDS)."
    )
    DISPATCH_INTERVAL_SECONDS = PositiveSeconds(
        5, "How often the dispatcher ticks, in seconds (less than LOOKAHEAD_SECONDS; 0.5 is fine)."
    )
    LEASE_SECONDS = PositiveInt(
        60,
        "A running job whose worker sent no heartbeat for this long is presumed dead.",
        maximum=_DAY,
    )
    HEARTBEAT_INTERVAL_SECONDS = PositiveSeconds(
        10, "How often a worker renews the lease of the job it runs (at most a third of the lease)."
    )
    DELIVERY_LEAD_SECONDS = PositiveSeconds(
        2,
        "How long before its run_at a job's message reaches a worker, which then waits out "
        "the exact eta (less than LOOKAHEAD_SECONDS).",
    )
    STALE_AFTER_SECONDS = PositiveInt(
        300,
        "An enqueued job not claimed this long after run_at is re-sent with the same token; "
        "each further re-send waits twice as long (at most 12 hours).",
        maximum=MAX_RESEND_WAIT_SECONDS,
    )
    RECOVERY_INTERVAL_SECONDS = PositiveSeconds(
        5,
        "How often a dispatcher re-sends unclaimed jobs, retries jobs whose lease expired, "
        "expires jobs past their deadline and holds or releases the due jobs of paused "
        "kinds (ticks in between only send due jobs).",
    )
    RETRY_BACKOFF_SECONDS = PositiveInt(
        30, "The first retry back-off; it doubles per attempt.", maximum=30 * _DAY
    )
    RETRY_BACKOFF_MAX_SECONDS = PositiveInt(
        6 * 3600, "The cap on the retry back-off.", maximum=30 * _DAY
    )
    DEFAULT_MAX_ATTEMPTS = PositiveInt(
        5, "max_attempts of a job scheduled without one.", maximum=MAX_ATTEMPTS_LIMIT
    )
    BATCH_SIZE = PositiveInt(100, "Rows the dispatcher claims per transaction.", maximum=10_000)
    RETENTION_DAYS = PositiveInt(
        30,
        "Finished jobs (succeeded, failed, cancelled, expired) older than this are deleted.",
        maximum=36_500,  # a century; beyond some 2,000 centuries the cutoff is no date
    )
    QUEUE_NAME = Text(
        DEFAULT_QUEUE_NAME,
        "The default queue of jobs: 1-80 letters, digits, '-' or '_'.",
        validator=is_valid_queue_name,
        expected="a queue name of 1-80 letters, digits, '-' or '_'",
        error_id="scheduler.E006",
    )
    SQS_ENDPOINT_URL = OptionalText(
        None,
        "An SQS-compatible server (moto, ElasticMQ), e.g. http://127.0.0.1:9324; "
        "None for Amazon SQS.",
        validator=_is_http_url,
        expected="None or an http(s) URL",
    )
    SQS_REGION = OptionalText(
        None,
        "The AWS region of the queue; None for boto3's default (AWS_DEFAULT_REGION).",
        # botocore's own rule for a region name, in lower case as AWS names its regions:
        # botocore signs for "EU-WEST-1", a region AWS does not have.
        validator=lambda value: re.fullmatch(r"(?!-)[a-z\d-]{1,63}(?<!-)", value) is not None,
        expected="None or a region name such as eu-west-1",
    )
    SQS_VISIBILITY_TIMEOUT_SECONDS = PositiveInt(
        300,
        "The queue's visibility timeout: it covers a message from receipt to the job's "
        "start, not the job. Keep Celery's broker visibility_timeout equal.",
        maximum=SQS_MAX_VISIBILITY_TIMEOUT,
    )
    SQS_WAIT_TIME_SECONDS = PositiveInt(
        10,
        "The queue's long-poll wait. Keep Celery's broker wait_time_seconds equal.",
        maximum=SQS_MAX_WAIT_TIME_SECONDS,
    )

    METRICS_TOKEN = OptionalText(
        None,
        "The bearer token /metrics requires (Authorization: Bearer <token>); None leaves "
        "it open, for a network where only Prometheus reaches it.",
        validator=_is_token,
        expected="None or printable ASCII without spaces (nor a newline at its end)",
        secret=True,
    )
    METRICS_WINDOW_SECONDS = PositiveInt(
        300,
        "/metrics' lateness histogram and attempt counts cover the attempts of this many "
        "seconds before the scrape.",
        maximum=_DAY,
    )

    @property
    def ADMIN_TASKS(self) -> tuple[str, ...]:  # noqa: N802 - named like the setting
        """Task names an operator may schedule from the admin (``SCHEDULER_ADMIN_TASKS``).

        Empty by default: a task runs with whatever arguments the operator types, so
        each one is opted in explicitly. ``scheduler.checks`` rejects unknown names.
        """
        configured = self.admin_tasks_raw()
        return tuple(configured) if isinstance(configured, list | tuple) else ()

    @staticmethod
    def admin_tasks_raw() -> object:
        """``SCHEDULER_ADMIN_TASKS`` as configured, unchecked."""
        return getattr(django_settings, "SCHEDULER_ADMIN_TASKS", ())

    @staticmethod
    def uses_time_zones() -> bool:
        """Django's ``USE_TZ``: jobs' times are aware datetimes only when it is on."""
        return bool(django_settings.USE_TZ)

    @staticmethod
    def beat_times_aware() -> bool:
        """django-celery-beat's ``DJANGO_CELERY_BEAT_TZ_AWARE`` (True by default)."""
        return bool(getattr(django_settings, "DJANGO_CELERY_BEAT_TZ_AWARE", True))

    @staticmethod
    def task_backend_paths() -> list[str]:
        """The classes of Django's ``TASKS`` backends, as configured (``django.tasks``)."""
        configs = getattr(django_settings, "TASKS", {})
        return [str(config["BACKEND"]) for config in configs.values() if "BACKEND" in config]

    @classmethod
    def all_settings(cls) -> list[Setting[Any]]:
        """Every typed setting, for checks and documentation."""
        return [value for value in vars(cls).values() if isinstance(value, Setting)]


scheduler_settings = SchedulerSettings()
