"""One-time admin forms: a token acts once, also when two submissions of it race."""

import threading
import uuid

import pytest
from django.db import connections, transaction

from scheduler.exceptions import AlreadySubmittedError
from scheduler.models import FormSubmission
from scheduler.services.submissions import submit_once


@pytest.mark.django_db(transaction=True)  # two connections, each committing
def test_a_double_click_in_flight_waits_for_the_first_and_is_refused():
    token = uuid.uuid4()
    first_in, second_done = threading.Event(), threading.Event()
    outcome: list[str] = []

    def second() -> None:
        try:
            first_in.wait(10)
            submit_once(token=token)
            outcome.append("acted")
        except AlreadySubmittedError:
            outcome.append("refused")
        finally:
            second_done.set()
            connections.close_all()

    thread = threading.Thread(target=second)
    thread.start()
    with transaction.atomic():
        submit_once(token=token)
        first_in.set()
        # The second waits on the first's uncommitted row, not seeing it.
        assert not second_done.wait(1)
    thread.join(10)
    assert outcome == ["refused"]
    assert FormSubmission.objects.filter(token=token).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_submission_whose_action_rolled_back_may_be_submitted_again():
    token = uuid.uuid4()
    with pytest.raises(RuntimeError), transaction.atomic():
        submit_once(token=token)
        raise RuntimeError("the action failed")
    submit_once(token=token)
    with pytest.raises(AlreadySubmittedError):
        submit_once(token=token)
