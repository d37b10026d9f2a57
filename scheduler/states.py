"""The job state machine, written once: every status and every legal transition.

Services apply a transition as one compare-and-set UPDATE
(``… WHERE id = %s AND status IN transition.sources``); the admin's actions,
monitoring and the model's constraints read the same table.

::

    scheduled ──dispatch──► enqueued ──claim──► running ──succeed──► succeeded
       ▲                     │  ▲                   ├──retry_later──► scheduled
       │                     └──┘ resend            ├──fail──► failed
       │                     │                      └──lease_retry / lease_fail──► scheduled/failed
       │                     └──put_back (paused)──► scheduled
       └── retry (failed, cancelled, expired) ◄── admin or API
    scheduled | enqueued ──cancel──► cancelled
    scheduled | enqueued ──reschedule──► scheduled
    scheduled | enqueued ──expire (deadline passed before it started)──► expired
"""

from dataclasses import dataclass

from django.db import models


class Status(models.TextChoices):
    """Where a job is in its life."""

    #: Waiting in PostgreSQL for its run_at (or a retry's back-off).
    SCHEDULED = "scheduled", "Scheduled"
    #: Sent to SQS with a dispatch token; not yet claimed by a worker.
    ENQUEUED = "enqueued", "Enqueued"
    #: Claimed by a worker, which is running its task.
    RUNNING = "running", "Running"
    #: The task returned. Terminal.
    SUCCEEDED = "succeeded", "Succeeded"
    #: Every attempt failed. Terminal, until retried.
    FAILED = "failed", "Failed"
    #: Cancelled before it started. Terminal, until retried.
    CANCELLED = "cancelled", "Cancelled"
    #: Its deadline passed before it started, so it never will. Terminal, until retried.
    EXPIRED = "expired", "Expired"


@dataclass(frozen=True)
class Transition:
    """A legal move: from any of ``sources`` to ``target``."""

    name: str
    sources: tuple[Status, ...]
    target: Status
    meaning: str


DISPATCH = Transition(
    "dispatch", (Status.SCHEDULED,), Status.ENQUEUED, "the dispatcher sent it to SQS"
)
REQUEUE_STALE = Transition(
    "requeue_stale",
    (Status.ENQUEUED,),
    Status.SCHEDULED,
    "no worker claimed it long after it was due: dispatch it again",
)
RESEND = Transition(
    "resend",
    (Status.ENQUEUED,),
    Status.ENQUEUED,
    "no worker claimed it: send its message again with the same token, each wait doubled",
)
PUT_BACK = Transition(
    "put_back",
    (Status.ENQUEUED,),
    Status.SCHEDULED,
    "its kind is paused: a worker handed it back, to be sent again on resume",
)
CLAIM = Transition(
    "claim", (Status.ENQUEUED,), Status.RUNNING, "a worker holding the current token took it"
)
SUCCEED = Transition("succeed", (Status.RUNNING,), Status.SUCCEEDED, "the task returned")
RETRY_LATER = Transition(
    "retry_later",
    (Status.RUNNING,),
    Status.SCHEDULED,
    "the attempt failed and attempts are left: run again after a back-off",
)
FAIL = Transition("fail", (Status.RUNNING,), Status.FAILED, "the last attempt failed")
LEASE_RETRY = Transition(
    "lease_retry",
    (Status.RUNNING,),
    Status.SCHEDULED,
    "its worker is presumed dead and attempts are left",
)
LEASE_FAIL = Transition(
    "lease_fail",
    (Status.RUNNING,),
    Status.FAILED,
    "its worker is presumed dead and no attempt is left",
)
CANCEL = Transition(
    "cancel",
    (Status.SCHEDULED, Status.ENQUEUED),
    Status.CANCELLED,
    "an operator or the API cancelled it before it started",
)
RESCHEDULE = Transition(
    "reschedule",
    (Status.SCHEDULED, Status.ENQUEUED),
    Status.SCHEDULED,
    "moved to another run_at before it started",
)
EXPIRE = Transition(
    "expire",
    (Status.SCHEDULED, Status.ENQUEUED),
    Status.EXPIRED,
    "its deadline passed before it started: it never will",
)
RETRY = Transition(
    "retry",
    (Status.FAILED, Status.CANCELLED, Status.EXPIRED),
    Status.SCHEDULED,
    "an operator or the API runs an ended job again, with fresh attempts",
)

TRANSITIONS: tuple[Transition, ...] = (
    DISPATCH,
    REQUEUE_STALE,
    RESEND,
    PUT_BACK,
    CLAIM,
    SUCCEED,
    RETRY_LATER,
    FAIL,
    LEASE_RETRY,
    LEASE_FAIL,
    CANCEL,
    RESCHEDULE,
    EXPIRE,
    RETRY,
)

#: Every status, in the order of the choices.
ALL: tuple[Status, ...] = tuple(Status)
#: Not started yet: the job waits for its time or for a worker.
PENDING: tuple[Status, ...] = (Status.SCHEDULED, Status.ENQUEUED)
#: Holding its unique key: at most one such job per key.
ACTIVE: tuple[Status, ...] = (*PENDING, Status.RUNNING)
#: Carrying a dispatch token: only the message with that token may claim or finish it.
IN_FLIGHT: tuple[Status, ...] = (Status.ENQUEUED, Status.RUNNING)
#: Ended: kept as history until the retention period purges it.
FINISHED: tuple[Status, ...] = (
    Status.SUCCEEDED,
    Status.FAILED,
    Status.CANCELLED,
    Status.EXPIRED,
)
#: "Run now" reschedules a pending job and retries an ended one.
RUNNABLE: tuple[Status, ...] = (*RESCHEDULE.sources, *RETRY.sources)
