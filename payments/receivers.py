"""The payments demo listens to the scheduler's signals (connected in PaymentsConfig.ready)."""

from typing import Any

from payments import services


def on_job_expired(*, job_id: int, task_name: str, **kwargs: Any) -> None:
    """A capture job that expired means the authorization lapsed before the capture."""
    if task_name == services.CAPTURE_TASK_NAME:
        services.mark_capture_missed(capture_job_id=job_id)
