"""The scheduler's errors cross processes as they were raised: pickled (multiprocessing,
Celery's pickle serializer) and through a result backend's JSON, which rebuilds an
exception as ``type(*args)``. A job body that schedules a follow-up on a held key fails
with DuplicateJobError: ``result.get()`` gave a garbled one, or a plain Exception."""

import pickle

import pytest
from celery import Celery
from celery.backends.base import Backend

from scheduler.exceptions import (
    AlreadySubmittedError,
    DuplicateJobError,
    InvalidArgumentsError,
    InvalidTransitionError,
    JobNotFoundError,
    KeyContentionError,
    PauseError,
    ResultRefusedError,
    SchedulerError,
    UnknownTaskError,
)
from scheduler.services.scheduling import _at_index

ERRORS = [
    UnknownTaskError("billing.nope"),
    InvalidArgumentsError("run_at", "must be aware"),
    ResultRefusedError("value too long"),
    DuplicateJobError("payments:capture:7", 5),
    DuplicateJobError("k", detail="an active job already holds unique_key='k'"),
    KeyContentionError(tries=3),
    JobNotFoundError(42),
    InvalidTransitionError(
        job_id=1, action="cancel", status="running", allowed=("scheduled", "enqueued")
    ),
    PauseError("already paused", task_name="billing.charge", queue=""),
    AlreadySubmittedError(),
    _at_index(DuplicateJobError("k", 9), 3),
]


def _same(back: BaseException, error: SchedulerError) -> None:
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert vars(back) == vars(error)


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_an_error_is_pickled_as_it_was_raised(error: SchedulerError) -> None:
    _same(pickle.loads(pickle.dumps(error)), error)


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_an_error_comes_back_from_a_json_result_backend_as_it_was_raised(
    error: SchedulerError,
) -> None:
    backend = Backend(Celery(set_as_current=False), serializer="json")
    back = backend.exception_to_python(backend.prepare_exception(error))
    assert type(back) is type(error)
    # JSON carries the arguments alone: a batch's position (``jobs[3]: ``) is none.
    assert str(back) == error.message()
