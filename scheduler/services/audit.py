"""The audit trail: operator actions recorded in the same transaction as the action."""

from datetime import datetime
from typing import Any

from scheduler.models import AuditAction, AuditEntry

Action = AuditAction


def record(
    action: AuditAction,
    *,
    actor: str | None,
    reason: str,
    job_id: int | None = None,
    **details: Any,
) -> None:
    """Write one entry for ``action`` by ``actor``; nothing when no actor is given.

    Call it inside the action's transaction, with an actor and reason that
    :func:`scheduler.validation.actor` and :func:`~scheduler.validation.reason` accepted,
    so that the entry exists if and only if the action took effect.
    """
    if actor is None:
        return
    AuditEntry.objects.create(
        action=action, actor=actor, reason=reason, job_id=job_id, details=details
    )


def times(
    run_at: datetime, deadline: datetime | None, *, previous_run_at: datetime | None = None
) -> dict[str, str]:
    """An entry's details for the run time (and deadline, if any) a job was given, and
    the run time it had before, for a job moved (a retry or run now overwrites it)."""
    details = {"run_at": run_at.isoformat()}
    if previous_run_at is not None:
        details["previous_run_at"] = previous_run_at.isoformat()
    if deadline is not None:
        details["deadline"] = deadline.isoformat()
    return details


def record_many(
    action: AuditAction, *, actor: str | None, reason: str, details: dict[int, dict[str, Any]]
) -> None:
    """Write one entry for ``action`` per job of ``details`` (its id and details), in one
    INSERT; nothing when no actor is given. As :func:`record`, inside the action's
    transaction."""
    if actor is None:
        return
    AuditEntry.objects.bulk_create(
        AuditEntry(action=action, actor=actor, reason=reason, job_id=job_id, details=each)
        for job_id, each in details.items()
    )
