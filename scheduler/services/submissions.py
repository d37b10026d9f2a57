"""One-time admin forms: the second submission of a page that acts (a double click on
"Save", a browser's resubmit) is refused, not applied again."""

from uuid import UUID

from django.db import transaction

from scheduler.exceptions import AlreadySubmittedError
from scheduler.models import FormSubmission


def submit_once(*, token: UUID) -> None:
    """Record the form ``token`` as submitted, in the caller's transaction, which should
    also do what the form does: rolled back, the form may be submitted again.

    A submission of the same token in flight waits for that one's commit (the primary
    key), then finds it. Raises :class:`AlreadySubmittedError` if it was submitted.
    """
    with transaction.atomic():
        _, created = FormSubmission.objects.get_or_create(token=token)
    if not created:
        raise AlreadySubmittedError
