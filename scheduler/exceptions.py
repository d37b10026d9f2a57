"""Errors raised by the scheduler's public API. Each one means nothing was written.

Each keeps the arguments it was made with as its ``args``, and says its message from
them: rebuilt as ``type(*args)`` (by pickle, or by a Celery result backend from JSON),
it is the error that was raised, where a message passed back in as the first argument
garbled it, or failed and came back as a plain ``Exception``.
"""


class SchedulerError(Exception):
    """Base class of the scheduler's errors."""

    #: In a batch (``schedule_many``), the position of the job at fault; else None.
    index: int | None = None

    def __str__(self) -> str:
        said = self.message()
        return said if self.index is None else f"jobs[{self.index}]: {said}"

    def message(self) -> str:
        """What went wrong, from the error's arguments."""
        return super().__str__()


class UnknownTaskError(SchedulerError, LookupError):
    """The task name is not a registered Celery task that may be scheduled."""

    def __init__(self, task_name: str) -> None:
        super().__init__(task_name)
        self.task_name = task_name

    def message(self) -> str:
        return f"{self.task_name!r} is not a registered Celery task that can be scheduled"


class InvalidArgumentsError(SchedulerError, ValueError):
    """A job's argument or option is not acceptable; ``field`` names which one."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def message(self) -> str:
        return f"{self.field} {self.reason}"


class ResultRefusedError(SchedulerError, ValueError):
    """PostgreSQL refused to store a job's result (past its limits, or a trigger's
    exception) in an atomic task's transaction, which the refusal broke: the attempt's
    error."""


class DuplicateJobError(SchedulerError):
    """An active job already holds the unique key (``holder_id`` if it is still there)."""

    def __init__(
        self, unique_key: str, holder_id: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(unique_key, holder_id, detail)
        self.unique_key = unique_key
        self.holder_id = holder_id
        self.detail = detail

    def message(self) -> str:
        holder = f" (#{self.holder_id})" if self.holder_id is not None else ""
        return self.detail or f"an active job{holder} already holds unique_key={self.unique_key!r}"


class KeyContentionError(SchedulerError):
    """Other requests took the unique keys an action on many jobs gives back, on each of
    its ``tries``; the action changed nothing and may be tried again."""

    def __init__(self, tries: int) -> None:
        super().__init__(tries)
        self.tries = tries

    def message(self) -> str:
        return (
            "other requests took the unique keys of selected jobs while the action ran, "
            f"on each of its {self.tries} tries"
        )


class JobNotFoundError(SchedulerError, LookupError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def message(self) -> str:
        return f"no scheduled job with id={self.job_id}"


class InvalidTransitionError(SchedulerError):
    """The job is not in a state that allows the requested change."""

    def __init__(self, job_id: int, action: str, status: str, allowed: tuple[str, ...]) -> None:
        super().__init__(job_id, action, status, allowed)
        self.job_id = job_id
        self.action = action
        self.status = status
        self.allowed = allowed

    def message(self) -> str:
        return (
            f"cannot {self.action} job {self.job_id}: it is {self.status}; "
            f"only a job that is {' or '.join(self.allowed)} can be"
        )


class PauseError(SchedulerError):
    """A pause or resume that would change nothing: the kind is already (not) paused."""

    def __init__(self, message: str, task_name: str, queue: str) -> None:
        super().__init__(message, task_name, queue)
        self.task_name = task_name
        self.queue = queue

    def message(self) -> str:
        return str(self.args[0])


class AlreadySubmittedError(SchedulerError):
    """This one-time form was submitted already (a double click): it acts only once."""

    def message(self) -> str:
        return "this form was submitted already and acted then; the list shows what it did"
