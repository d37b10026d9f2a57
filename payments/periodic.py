"""The beat entry that runs the demo's sweep of missed captures every 5 minutes."""

from django_celery_beat.models import PeriodicTask

from payments.services import SWEEP_TASK_NAME
from scheduler.dispatch.beat import ensure_periodic_task

SWEEP_PERIODIC_TASK_NAME = "payments: record missed captures"
SWEEP_INTERVAL_SECONDS = 300


def ensure_missed_capture_sweep() -> PeriodicTask:
    """Create the beat entry of :func:`payments.services.record_missed_captures` unless it
    exists (written after migrate; one an operator changed or disabled is kept so)."""
    entry, _ = ensure_periodic_task(
        SWEEP_PERIODIC_TASK_NAME,
        task=SWEEP_TASK_NAME,
        interval=SWEEP_INTERVAL_SECONDS,
        description="Schedules the missed-capture job of authorized payments whose capture "
        "job ended badly and whose receivers' job was lost (written by the payments app "
        "after migrate; sent by beat to a worker).",
    )
    return entry
