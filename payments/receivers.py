"""The payments demo listens to the scheduler's signals (connected in PaymentsConfig.ready)."""

from typing import Any

from payments import services


def on_job_ended(*, job_id: int, task_name: str, **kwargs: Any) -> None:
    """A capture job that expired (the authorization lapsed first), failed or was
    cancelled ended without capturing: a job records its payment's capture missed.

    A job, not a call to the gateway here: this runs in the process that decided the
    outcome, the dispatcher's recovery among them, and a gateway out of reach would
    stall it, then leave the payment authorized for good. What a lost receiver missed
    (its request killed mid-way through a bulk cancel's receivers, a signal not sent)
    the sweep finds: :func:`payments.services.record_missed_captures`."""
    if task_name == services.CAPTURE_TASK_NAME:
        services.check_missed_capture(capture_job_id=job_id)
