"""Errors raised by the scheduler's public API. Each one means nothing was written."""


class SchedulerError(Exception):
    """Base class of the scheduler's errors."""


class UnknownTaskError(SchedulerError, LookupError):
    """The task name is not a registered Celery task that may be scheduled."""


class InvalidArgumentsError(SchedulerError, ValueError):
    """The job's arguments or options are not acceptable (e.g. not JSON)."""


class DuplicateJobError(SchedulerError):
    """An active job already holds the unique key."""

    def __init__(self, unique_key: str) -> None:
        super().__init__(f"an active job already holds unique_key={unique_key!r}")
        self.unique_key = unique_key


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
