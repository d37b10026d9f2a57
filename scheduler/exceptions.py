"""Errors raised by the scheduler's public API. Each one means nothing was written."""


class SchedulerError(Exception):
    """Base class of the scheduler's errors."""

    #: In a batch (``schedule_many``), the position of the job at fault; else None.
    index: int | None = None


class UnknownTaskError(SchedulerError, LookupError):
    """The task name is not a registered Celery task that may be scheduled."""

    def __init__(self, task_name: str) -> None:
        super().__init__(f"{task_name!r} is not a registered Celery task that can be scheduled")
        self.task_name = task_name


class InvalidArgumentsError(SchedulerError, ValueError):
    """A job's argument or option is not acceptable; ``field`` names which one."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


class ResultRefusedError(SchedulerError, ValueError):
    """PostgreSQL refused to store a job's result (past its limits, or a trigger's
    exception) in an atomic task's transaction, which the refusal broke: the attempt's
    error."""


class DuplicateJobError(SchedulerError):
    """An active job already holds the unique key (``holder_id`` if it is still there)."""

    def __init__(
        self, unique_key: str, holder_id: int | None = None, *, detail: str | None = None
    ) -> None:
        holder = f" (#{holder_id})" if holder_id is not None else ""
        super().__init__(detail or f"an active job{holder} already holds unique_key={unique_key!r}")
        self.unique_key = unique_key
        self.holder_id = holder_id


class KeyContentionError(SchedulerError):
    """Other requests took the unique keys an action on many jobs gives back, on each of
    its ``tries``; the action changed nothing and may be tried again."""

    def __init__(self, *, tries: int) -> None:
        super().__init__(
            "other requests took the unique keys of selected jobs while the action ran, "
            f"on each of its {tries} tries"
        )
        self.tries = tries


class JobNotFoundError(SchedulerError, LookupError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no scheduled job with id={job_id}")
        self.job_id = job_id


class InvalidTransitionError(SchedulerError):
    """The job is not in a state that allows the requested change."""

    def __init__(self, *, job_id: int, action: str, status: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"cannot {action} job {job_id}: it is {status}; "
            f"only a job that is {' or '.join(allowed)} can be"
        )
        self.job_id = job_id
        self.action = action
        self.status = status


class PauseError(SchedulerError):
    """A pause or resume that would change nothing: the kind is already (not) paused."""

    def __init__(self, message: str, *, task_name: str, queue: str) -> None:
        super().__init__(message)
        self.task_name = task_name
        self.queue = queue


class AlreadySubmittedError(SchedulerError):
    """This one-time form was submitted already (a double click): it acts only once."""

    def __init__(self) -> None:
        super().__init__(
            "this form was submitted already and acted then; the list shows what it did"
        )
