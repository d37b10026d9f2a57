"""The scheduler's settings, with their defaults, read lazily from Django settings.

Every value is looked up on each access, so ``override_settings`` and the pytest
``settings`` fixture take effect at once. ``scheduler.checks`` validates them.
"""

from typing import Any, overload

from django.conf import settings as django_settings

#: SQS holds a message back at most 15 minutes (DelaySeconds 0-900).
SQS_MAX_DELAY_SECONDS = 900


class IntSetting:
    """A ``SCHEDULER_<ATTRIBUTE>`` Django setting with a default."""

    def __init__(self, default: int, help_text: str) -> None:
        self.default = default
        self.help_text = help_text
        self.setting_name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.setting_name = f"SCHEDULER_{name}"

    @overload
    def __get__(self, instance: None, owner: type) -> "IntSetting": ...
    @overload
    def __get__(self, instance: object, owner: type) -> int: ...
    def __get__(self, instance: object | None, owner: type) -> "int | IntSetting":
        if instance is None:
            return self
        value: Any = getattr(django_settings, self.setting_name, self.default)
        return value  # type: ignore[no-any-return]


class SchedulerSettings:
    """The ``SCHEDULER_*`` settings, by their name without the prefix."""

    MAX_DELAY_SECONDS = IntSetting(
        SQS_MAX_DELAY_SECONDS, "Longest per-message DelaySeconds sent to SQS (at most 900)."
    )
    LOOKAHEAD_SECONDS = IntSetting(
        300, "How long before its run_at a job is sent to SQS (at most MAX_DELAY_SECONDS)."
    )
    DISPATCH_INTERVAL_SECONDS = IntSetting(
        5, "How often the dispatcher ticks (less than LOOKAHEAD_SECONDS)."
    )
    LEASE_SECONDS = IntSetting(
        3600, "A running job not finished this long after it started is presumed dead."
    )
    STALE_AFTER_SECONDS = IntSetting(
        300, "An enqueued job not claimed this long after run_at is re-dispatched."
    )
    RETRY_BACKOFF_SECONDS = IntSetting(30, "The first retry back-off; it doubles per attempt.")
    RETRY_BACKOFF_MAX_SECONDS = IntSetting(6 * 3600, "The cap on the retry back-off.")
    DEFAULT_MAX_ATTEMPTS = IntSetting(5, "max_attempts of a job scheduled without one.")
    BATCH_SIZE = IntSetting(100, "Rows the dispatcher claims per transaction.")
    RETENTION_DAYS = IntSetting(
        30, "Finished jobs (succeeded, failed, cancelled) older than this are deleted."
    )

    @property
    def QUEUE_NAME(self) -> str:  # noqa: N802 - named like the setting
        """The default SQS queue (``SCHEDULER_QUEUE_NAME``, from the environment)."""
        name: str = getattr(django_settings, "SCHEDULER_QUEUE_NAME", "scheduler-jobs")
        return name

    @property
    def ADMIN_TASKS(self) -> tuple[str, ...]:  # noqa: N802 - named like the setting
        """Task names an operator may schedule from the admin (``SCHEDULER_ADMIN_TASKS``).

        Empty by default: a task runs with whatever arguments the operator types, so
        each one is opted in explicitly. ``scheduler.checks`` rejects unknown names.
        """
        return tuple(getattr(django_settings, "SCHEDULER_ADMIN_TASKS", ()))

    @classmethod
    def int_settings(cls) -> list[IntSetting]:
        """Every integer setting, for checks and documentation."""
        return [value for value in vars(cls).values() if isinstance(value, IntSetting)]


scheduler_settings = SchedulerSettings()
