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
       │                     └──refused (by SQS, undone before commit)──► scheduled
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


_S = Status
# fmt: off
DISPATCH = Transition("dispatch", (_S.SCHEDULED,), _S.ENQUEUED, "sent to SQS with a fresh token")
REFUSED = Transition("refused", (_S.ENQUEUED,), _S.SCHEDULED, "SQS refused it: dispatch undone")
RESEND = Transition("resend", (_S.ENQUEUED,), _S.ENQUEUED, "unclaimed: same token, re-sent")
PUT_BACK = Transition("put_back", (_S.ENQUEUED,), _S.SCHEDULED, "paused: sent again on resume")
CLAIM = Transition("claim", (_S.ENQUEUED,), _S.RUNNING, "taken by the current token's message")
SUCCEED = Transition("succeed", (_S.RUNNING,), _S.SUCCEEDED, "the task returned")
RETRY_LATER = Transition("retry_later", (_S.RUNNING,), _S.SCHEDULED, "failed, attempts left")
FAIL = Transition("fail", (_S.RUNNING,), _S.FAILED, "the last attempt failed")
LEASE_RETRY = Transition("lease_retry", (_S.RUNNING,), _S.SCHEDULED, "worker gone, attempts left")
LEASE_FAIL = Transition("lease_fail", (_S.RUNNING,), _S.FAILED, "worker gone, no attempt left")
CANCEL = Transition("cancel", (_S.SCHEDULED, _S.ENQUEUED), _S.CANCELLED, "called off before it ran")
RESCHEDULE = Transition("reschedule", (_S.SCHEDULED, _S.ENQUEUED), _S.SCHEDULED, "moved in time")
EXPIRE = Transition("expire", (_S.SCHEDULED, _S.ENQUEUED), _S.EXPIRED, "its deadline passed")
RETRY = Transition("retry", (_S.FAILED, _S.CANCELLED, _S.EXPIRED), _S.SCHEDULED, "run again, anew")
# fmt: on

TRANSITIONS: tuple[Transition, ...] = (
    DISPATCH,
    REFUSED,
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
#: Ended without the task's success: each may be retried.
ENDED_BADLY: tuple[Status, ...] = (Status.FAILED, Status.CANCELLED, Status.EXPIRED)
#: Ended: kept as history until the retention period purges it.
FINISHED: tuple[Status, ...] = (Status.SUCCEEDED, *ENDED_BADLY)
#: "Run now" reschedules a pending job and retries an ended one.
RUNNABLE: tuple[Status, ...] = (*RESCHEDULE.sources, *RETRY.sources)
