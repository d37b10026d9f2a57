"""The payments demo listens to the scheduler's signals (connected in PaymentsConfig.ready)."""

from typing import Any

from payments import services


def on_job_ended(*, job_id: int, task_name: str, **kwargs: Any) -> None:
    """A capture job that expired (the authorization lapsed first), failed or was
    cancelled ended without capturing: its payment's capture was missed."""
    if task_name == services.CAPTURE_TASK_NAME:
        services.mark_capture_missed(capture_job_id=job_id)
