"""The job list's actions: each calls a service, and reports changed and skipped jobs."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from scheduler.admin import bulk, changelist
from scheduler.exceptions import InvalidArgumentsError
from scheduler.models import AuditEntry, ScheduledJob
from tests.integration.admin_helpers import (
    ASKED_FIRST,
    CHANGELIST,
    T0,
    Status,
    confirmed,
    job,
    job_fields,
    messages_of,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0) as frozen_time:
        yield frozen_time


@pytest.fixture
def one_of_each():
    """One job in every status, due in a day."""
    return {status: job(status, run_at=T0 + timedelta(days=1)) for status in Status}


def act(client, action, jobs, **extra):
    # An intermediate page's submission token, as a page would give it.
    data = {
        "action": action,
        "index": "0",
        "_selected_action": [j.pk for j in jobs],
        "submission": str(uuid.uuid4()),
        **extra,
    }
    return client.post(CHANGELIST, data, follow=True)


def statuses(jobs):
    return {status: ScheduledJob.objects.get(pk=j.pk).status for status, j in jobs.items()}


def test_cancel_changes_scheduled_and_enqueued_and_skips_the_rest(admin_client, one_of_each):
    response = confirmed(admin_client, "cancel_selected", one_of_each.values())
    assert messages_of(response) == ["Cancelled 2 jobs; skipped 5 not scheduled or enqueued."]
    assert statuses(one_of_each) == {
        Status.SCHEDULED: Status.CANCELLED,
        Status.ENQUEUED: Status.CANCELLED,
        Status.RUNNING: Status.RUNNING,
        Status.SUCCEEDED: Status.SUCCEEDED,
        Status.FAILED: Status.FAILED,
        Status.CANCELLED: Status.CANCELLED,
        Status.EXPIRED: Status.EXPIRED,
    }


def test_run_now_moves_pending_and_ended_jobs_to_now(admin_client, one_of_each):
    response = confirmed(admin_client, "run_selected_now", one_of_each.values())
    assert messages_of(response) == ["Set to run now 5 jobs; skipped 2 running or succeeded."]
    for status in (
        Status.SCHEDULED,
        Status.ENQUEUED,
        Status.FAILED,
        Status.CANCELLED,
        Status.EXPIRED,
    ):
        moved = ScheduledJob.objects.get(pk=one_of_each[status].pk)
        assert (moved.status, moved.run_at, moved.dispatch_token) == (Status.SCHEDULED, T0, None)
    assert ScheduledJob.objects.get(pk=one_of_each[Status.RUNNING].pk).status == Status.RUNNING


def test_retry_reschedules_failed_and_cancelled_jobs_with_fresh_attempts(admin_client, one_of_each):
    response = confirmed(admin_client, "retry_selected", one_of_each.values())
    assert messages_of(response) == ["Retried 3 jobs; skipped 4 not failed, cancelled or expired."]
    retried = ScheduledJob.objects.get(pk=one_of_each[Status.FAILED].pk)
    assert (retried.status, retried.attempts, retried.run_at) == (Status.SCHEDULED, 0, T0)


def test_retry_skips_a_job_whose_unique_key_an_active_job_holds(admin_client):
    failed = job(Status.FAILED, unique_key="k1")
    job(Status.SCHEDULED, unique_key="k1")
    response = confirmed(admin_client, "retry_selected", [failed])
    assert messages_of(response) == [
        "Retried 0 jobs; skipped 1 whose unique key an active job holds."
    ]
    assert ScheduledJob.objects.get(pk=failed.pk).status == Status.FAILED


@pytest.mark.parametrize(
    ("action", "verb"), [("retry_selected", "Retried"), ("run_selected_now", "Set to run now")]
)
def test_jobs_that_expired_at_their_deadline_are_skipped_for_that_reason(
    admin_client, action, verb
):
    # Workers down past the jobs' deadlines: they expired, and each needs a new deadline
    # to run. The message said they "were not failed, cancelled or expired".
    expired = [job(Status.EXPIRED, deadline=T0 - timedelta(minutes=5)) for _ in range(3)]
    failed = job(Status.FAILED)
    held = job(Status.FAILED, unique_key="k1")
    job(Status.SCHEDULED, unique_key="k1")
    running = job(Status.RUNNING)
    response = confirmed(admin_client, action, [*expired, failed, held, running])
    state, new_deadline = (
        ("not failed, cancelled or expired", "retry them with a new one")
        if action == "retry_selected"
        else (
            "running or succeeded",
            "retry ended ones with a new one; give pending ones one on their page",
        )
    )
    assert messages_of(response) == [
        f"{verb} 1 job; skipped 5: 1 {state}, 1 whose unique key an active job holds, 3 past "
        f"their deadline ({new_deadline})."
    ]
    assert ScheduledJob.objects.get(pk=failed.pk).status == Status.SCHEDULED
    assert {ScheduledJob.objects.get(pk=j.pk).status for j in expired} == {Status.EXPIRED}


def test_jobs_that_expired_at_their_deadline_are_retried_with_a_new_one(admin_client):
    # Workers down past the jobs' deadlines: each needed a new one on its own page.
    expired = [job(Status.EXPIRED, deadline=T0 - timedelta(minutes=5)) for _ in range(3)]
    running = job(Status.RUNNING)
    page = act(admin_client, "retry_selected_with_deadline", [*expired, running])
    assert "Retry 4 selected jobs now, each with the deadline below." in page.content.decode()
    response = act(
        admin_client,
        "retry_selected_with_deadline",
        [*expired, running],
        apply="Retry",
        deadline_local="2026-11-24T09:00",
        time_zone="America/New_York",
        reason="workers back",
    )
    assert messages_of(response) == ["Retried 3 jobs; skipped 1 not failed, cancelled or expired."]
    new_deadline = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    assert {
        (j.status, j.run_at, j.deadline, j.attempts)
        for j in ScheduledJob.objects.filter(pk__in=[e.pk for e in expired])
    } == {(Status.SCHEDULED, T0, new_deadline, 0)}
    assert ScheduledJob.objects.get(pk=running.pk).status == Status.RUNNING


@pytest.mark.parametrize(
    ("deadline", "zone", "error"),
    [
        ("", "UTC", "Enter a date and time."),
        ("2026-11-24T11:59", "UTC", "The deadline must be in the future."),
        # The service's own refusal: every one read "The deadline must be in the future."
        ("9999-12-31T23:00", "America/New_York", "is not between years 1 and 9999 in UTC"),
    ],
)
def test_a_new_deadline_that_cannot_be_kept_leaves_the_jobs_as_they_were(
    admin_client, deadline, zone, error
):
    expired = job(Status.EXPIRED, deadline=T0 - timedelta(minutes=5))
    response = act(
        admin_client,
        "retry_selected_with_deadline",
        [expired],
        apply="Retry",
        deadline_local=deadline,
        time_zone=zone,
    )
    assert error in response.content.decode()
    assert ScheduledJob.objects.get(pk=expired.pk).status == Status.EXPIRED


def test_run_now_says_how_pending_and_ended_jobs_past_their_deadline_get_a_new_one(
    admin_client,
):
    # Beat down too: nothing expired the pending ones, which a retry does not take.
    past = [
        job(status, deadline=T0 - timedelta(minutes=5))
        for status in (Status.SCHEDULED, Status.EXPIRED)
    ]
    response = confirmed(admin_client, "run_selected_now", past)
    assert messages_of(response) == [
        "Set to run now 0 jobs; skipped 2 past their deadline (retry ended ones with a new "
        "one; give pending ones one on their page)."
    ]


@pytest.mark.parametrize(
    ("typed", "zone", "refusal"),
    [
        # Past the service's check, not the form's: it was a 500.
        ("9999-12-31T23:00", "America/New_York", "run_at is out of range: 9999-12-31T23:00:00"),
        # Read in the chosen zone with its offset dropped: 18:00+09:00 (09:00 UTC) was
        # stored as 18:00 UTC, 9 hours off.
        ("2026-12-24T18:00+09:00", "UTC", "without a UTC offset"),
    ],
)
def test_a_time_the_page_cannot_take_as_typed_is_refused_on_it(admin_client, typed, zone, refusal):
    scheduled = job(run_at=T0 + timedelta(days=1))
    response = act(
        admin_client,
        "reschedule_selected",
        [scheduled],
        apply="Reschedule",
        mode="to",
        run_at_local=typed,
        time_zone=zone,
        offset_unit="minutes",
    )
    assert response.status_code == 200
    assert refusal in response.content.decode()
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(days=1)


def test_a_deadline_that_passes_as_the_action_runs_shows_the_page_again(
    admin_client, monkeypatch, frozen
):
    # Checked by the form a moment before the service checks it again.
    expired = job(Status.EXPIRED, deadline=T0 - timedelta(minutes=5))

    def just_passed(jobs, *, by, deadline):
        frozen.tick(timedelta(minutes=2))  # the deadline, a minute ahead, has passed
        raise InvalidArgumentsError("deadline", "must be after run_at")

    monkeypatch.setattr(bulk, "retry_jobs", just_passed)
    response = act(
        admin_client,
        "retry_selected_with_deadline",
        [expired],
        apply="Retry",
        deadline_local="2026-11-24T12:01",
        time_zone="UTC",
    )
    assert response.status_code == 200
    assert "The deadline must be in the future." in response.content.decode()
    assert ScheduledJob.objects.get(pk=expired.pk).status == Status.EXPIRED


@pytest.mark.parametrize(
    ("reason", "refusal"),
    [
        ("gateway\x00down", "Null characters are not allowed."),
        ("x" * 1001, "Ensure this value has at most 1000 characters (it has 1001)."),
    ],
)
@pytest.mark.parametrize(
    "action",
    [
        "cancel_selected",
        "run_selected_now",
        "retry_selected",
        "retry_selected_with_deadline",
        "reschedule_selected",
    ],
)
def test_a_reason_that_cannot_be_kept_refuses_the_action_saying_why(
    admin_client, action, reason, refusal
):
    # Django's answer was "No action selected.", with the action chosen and jobs ticked.
    jobs = [job(Status.SCHEDULED), job(Status.FAILED)]
    response = act(admin_client, action, jobs, reason=reason)
    assert messages_of(response) == [f"No job was changed: reason: {refusal}"]
    assert [ScheduledJob.objects.get(pk=j.pk).status for j in jobs] == [
        Status.SCHEDULED,
        Status.FAILED,
    ]


def test_reschedule_asks_for_the_time_on_an_intermediate_page(admin_client, one_of_each):
    response = act(admin_client, "reschedule_selected", one_of_each.values())
    assert response.templates[0].name == ASKED_FIRST
    content = response.content.decode()
    assert "Move 7 selected jobs." in content
    for selected in one_of_each.values():
        assert f'name="_selected_action" value="{selected.pk}"' in content
    assert ScheduledJob.objects.filter(run_at=T0 + timedelta(days=1)).count() == 7


def selected_by_status(page) -> dict[str, tuple[int, str]]:
    """The intermediate page's breakdown: each status, how many of the selected jobs are
    in it, and what the action does to them."""
    rows = re.findall(
        r'<tr id="selected-(\w+)"><td>[^<]*</td><td>(\d+)</td><td>([^<]*)</td></tr>',
        page.content.decode(),
    )
    return {status: (int(count), outcome) for status, count, outcome in rows}


ASKING = {
    "cancel_selected": "Cancel 7 selected jobs.",
    "run_selected_now": "Run 7 selected jobs now:",
    "retry_selected": "Retry 7 selected jobs now.",
}


@pytest.mark.parametrize("action", ASKING)
def test_cancel_run_now_and_retry_ask_first_and_change_nothing_until_confirmed(
    admin_client, one_of_each, action
):
    # They acted at once, on up to 10,000 jobs of a "select all": a mistaken cancel or
    # run now cannot be undone, and nothing said how many jobs, or which, it would take.
    page = act(admin_client, action, one_of_each.values(), reason="incident 12")
    assert page.status_code == 200
    assert page.templates[0].name == ASKED_FIRST
    content = page.content.decode()
    assert ASKING[action] in content
    assert 'value="incident 12"' in content
    for selected in one_of_each.values():
        assert f'name="_selected_action" value="{selected.pk}"' in content
    assert statuses(one_of_each) == {status: status for status in Status}
    assert not AuditEntry.objects.exists()


def test_the_page_says_how_many_jobs_of_each_status_the_action_takes_or_skips(admin_client):
    # "Select all" and Cancel answered "Cancelled 4704 jobs." with nothing before it to
    # say how many jobs the list's filters matched, or in which states.
    for status, count in ((Status.SCHEDULED, 3), (Status.ENQUEUED, 2), (Status.FAILED, 4)):
        for _ in range(count):
            job(status)
    job(Status.SCHEDULED, queue="other")
    chosen = {"index": "0", "select_across": "1", "_selected_action": "0"}
    url = f"{CHANGELIST}?queue=scheduler-jobs"
    cancel = admin_client.post(url, {**chosen, "action": "cancel_selected"})
    assert "Cancel 9 selected jobs." in cancel.content.decode()
    assert selected_by_status(cancel) == {
        "scheduled": (3, "acts on them"),
        "enqueued": (2, "acts on them"),
        "failed": (4, "skips them"),
    }
    run_now = admin_client.post(url, {**chosen, "action": "run_selected_now"})
    assert {status: outcome for status, (_, outcome) in selected_by_status(run_now).items()} == {
        "scheduled": "acts on them",
        "enqueued": "acts on them",
        "failed": "acts on them",
    }
    assert set(ScheduledJob.objects.values_list("status", flat=True)) == {
        Status.SCHEDULED,
        Status.ENQUEUED,
        Status.FAILED,
    }
    response = confirmed(
        admin_client, "cancel_selected", [], url=url, select_across="1", _selected_action="0"
    )
    assert messages_of(response) == ["Cancelled 5 jobs; skipped 4 not scheduled or enqueued."]
    assert ScheduledJob.objects.get(queue="other").status == Status.SCHEDULED


@pytest.mark.parametrize("action", ["run_selected_now", "retry_selected"])
def test_run_now_and_retry_warn_that_ended_jobs_among_them_run_again(admin_client, action):
    # Run now retried the failed, cancelled and expired jobs of a selection too, without
    # a word before it did.
    pending = [job(Status.SCHEDULED), job(Status.ENQUEUED)]
    ended = [job(Status.FAILED), job(Status.FAILED), job(Status.CANCELLED)]
    page = act(admin_client, action, [*pending, *ended]).content.decode()
    assert (
        "3 of the selected jobs have ended (2 failed, 1 cancelled): they run again, "
        "from their first attempt."
    ) in page
    quiet = act(admin_client, action, pending).content.decode()
    assert "have ended" not in quiet
    assert "has ended" not in quiet


def test_cancel_does_not_warn_of_ended_jobs_it_skips(admin_client):
    # The failed job stays failed: nothing runs again, so nothing to warn of.
    page = act(admin_client, "cancel_selected", [job(Status.SCHEDULED), job(Status.FAILED)])
    assert "run again" not in page.content.decode()


def test_reschedule_to_a_time_in_the_operators_zone(admin_client, one_of_each):
    response = act(
        admin_client,
        "reschedule_selected",
        one_of_each.values(),
        apply="Reschedule",
        mode="to",
        run_at_local="2026-12-24T18:00",
        time_zone="America/New_York",
        offset_unit="minutes",
    )
    assert messages_of(response) == ["Rescheduled 2 jobs; skipped 5 not scheduled or enqueued."]
    new_time = datetime(2026, 12, 24, 23, 0, tzinfo=UTC)
    for status in (Status.SCHEDULED, Status.ENQUEUED):
        moved = ScheduledJob.objects.get(pk=one_of_each[status].pk)
        assert (moved.status, moved.run_at) == (Status.SCHEDULED, new_time)
    assert ScheduledJob.objects.get(pk=one_of_each[Status.FAILED].pk).run_at != new_time


def test_reschedule_by_an_offset_shifts_each_job_from_its_own_time(admin_client):
    early = job(run_at=T0 + timedelta(hours=1))
    late = job(Status.ENQUEUED, run_at=T0 + timedelta(days=3))
    response = act(
        admin_client,
        "reschedule_selected",
        [early, late],
        apply="Reschedule",
        mode="by",
        offset_amount="-30",
        offset_unit="minutes",
        time_zone="UTC",
    )
    assert messages_of(response) == ["Rescheduled 2 jobs."]
    assert ScheduledJob.objects.get(pk=early.pk).run_at == T0 + timedelta(minutes=30)
    assert ScheduledJob.objects.get(pk=late.pk).run_at == T0 + timedelta(days=3, minutes=-30)


def test_an_offset_that_would_pass_year_9999_skips_that_job_and_moves_the_others(admin_client):
    # A "never" date as a job's time, shifted a day later: OverflowError, a 500, with the
    # jobs before it in the selection already moved.
    sooner = job(run_at=T0 + timedelta(hours=1))
    never = job(run_at=datetime(9999, 12, 31, 12, tzinfo=UTC))
    later = job(run_at=T0 + timedelta(days=3))
    response = act(
        admin_client,
        "reschedule_selected",
        [sooner, never, later],
        apply="Reschedule",
        mode="by",
        offset_amount="1",
        offset_unit="days",
        time_zone="UTC",
    )
    assert response.status_code == 200
    assert messages_of(response) == [
        "Rescheduled 2 jobs; skipped 1 that would move beyond the years 1-9999."
    ]
    assert ScheduledJob.objects.get(pk=sooner.pk).run_at == T0 + timedelta(days=1, hours=1)
    assert ScheduledJob.objects.get(pk=never.pk).run_at == never.run_at
    assert ScheduledJob.objects.get(pk=later.pk).run_at == T0 + timedelta(days=4)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"mode": "by", "offset_amount": "0"}, "Enter a non-zero offset."),
        ({"mode": "by", "offset_amount": ""}, "Enter a non-zero offset."),
        ({"mode": "to", "run_at_local": ""}, "Enter a date and time."),
        ({"mode": "to", "run_at_local": "2026-11-01T10:00"}, "is in the past"),
    ],
)
def test_reschedule_form_errors_keep_the_jobs_where_they_are(admin_client, data, error):
    scheduled = job(run_at=T0 + timedelta(days=1))
    response = act(
        admin_client,
        "reschedule_selected",
        [scheduled],
        apply="Reschedule",
        offset_unit="minutes",
        time_zone="UTC",
        **data,
    )
    assert error in response.content.decode()
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(days=1)


def test_a_reschedule_by_an_offset_submitted_twice_moves_the_jobs_once(admin_client):
    # A double click on "-30 minutes" moved the jobs an hour earlier.
    scheduled = job(Status.SCHEDULED, run_at=T0 + timedelta(days=1))
    apply = {
        "apply": "Reschedule",
        "mode": "by",
        "offset_amount": "-30",
        "offset_unit": "minutes",
        "time_zone": "UTC",
        "submission": str(uuid.uuid4()),
    }
    first = act(admin_client, "reschedule_selected", [scheduled], **apply)
    assert messages_of(first) == ["Rescheduled 1 job."]
    second = act(admin_client, "reschedule_selected", [scheduled], **apply)
    assert messages_of(second) == [
        "No job was changed: this form was submitted already and acted then; the list "
        "shows what it did."
    ]
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(hours=23, minutes=30)
    assert AuditEntry.objects.filter(action=AuditEntry.Action.RESCHEDULE).count() == 1


def _intermediate_page(client, jobs, listed_at):
    """The page "Reschedule selected jobs…" shows, for a list loaded at ``listed_at``."""
    page = client.post(
        CHANGELIST,
        {
            "action": "reschedule_selected",
            "index": "0",
            "_selected_action": [j.pk for j in jobs],
            "listed_at": listed_at,
        },
    )
    assert page.status_code == 200
    return page.content.decode()


def _submit(client, page, **answers):
    """``page``'s own hidden fields (its token among them) with ``answers``, applied."""
    data = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page):
        data.setdefault(name, []).append(value)
    return client.post(CHANGELIST, {**data, **answers, "apply": "Reschedule"}, follow=True)


SHIFT_BACK = {"mode": "by", "offset_amount": "-30", "offset_unit": "minutes", "time_zone": "UTC"}


def test_the_job_list_gives_its_actions_the_time_it_was_loaded(admin_client):
    listed_at = re.search(
        r'name="listed_at" value="([^"]+)"', admin_client.get(CHANGELIST).content.decode()
    )
    assert listed_at is not None
    assert datetime.fromisoformat(listed_at[1]) == T0


def test_two_operators_shifting_the_same_jobs_move_them_once(
    admin_client, django_user_model, client
):
    # Each page had its own token: both shifts applied, and the jobs moved an hour.
    scheduled = job(Status.SCHEDULED, run_at=T0 + timedelta(days=1))
    other = job(Status.SCHEDULED, run_at=T0 + timedelta(days=2))
    client.force_login(django_user_model.objects.create_superuser("bob", password="x"))
    alice_page = _intermediate_page(admin_client, [scheduled], T0.isoformat())
    bob_page = _intermediate_page(client, [scheduled, other], T0.isoformat())
    with freeze_time(T0 + timedelta(seconds=5)):
        assert messages_of(_submit(admin_client, alice_page, **SHIFT_BACK)) == [
            "Rescheduled 1 job."
        ]
        assert messages_of(_submit(client, bob_page, **SHIFT_BACK)) == [
            "Rescheduled 1 job; skipped 1 that an operator acted on after the list was "
            "loaded (look at them again)."
        ]
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(hours=23, minutes=30)
    assert ScheduledJob.objects.get(pk=other.pk).run_at == T0 + timedelta(days=2, minutes=-30)


def test_the_list_action_posted_again_after_back_does_not_shift_the_jobs_twice(admin_client):
    # Back from the list to the intermediate page (never cached) posts the list's
    # action again: a new page, a new token, and the jobs moved again.
    scheduled = job(Status.SCHEDULED, run_at=T0 + timedelta(days=1))
    page = _intermediate_page(admin_client, [scheduled], T0.isoformat())
    with freeze_time(T0 + timedelta(seconds=5)):
        _submit(admin_client, page, **SHIFT_BACK)
    with freeze_time(T0 + timedelta(seconds=10)):
        again = _intermediate_page(admin_client, [scheduled], T0.isoformat())
        response = _submit(admin_client, again, **SHIFT_BACK)
    assert messages_of(response) == [
        "Rescheduled 0 jobs; skipped 1 that an operator acted on after the list was loaded "
        "(look at them again)."
    ]
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(hours=23, minutes=30)
    # A list loaded after the shift shifts it again: the operator saw where it is.
    with freeze_time(T0 + timedelta(seconds=15)):
        fresh = _intermediate_page(admin_client, [scheduled], timezone.now().isoformat())
        assert messages_of(_submit(admin_client, fresh, **SHIFT_BACK)) == ["Rescheduled 1 job."]


def test_select_all_acts_on_every_job_matching_the_filters(admin_client):
    for _ in range(3):
        job(Status.SCHEDULED)
    job(Status.SUCCEEDED)
    noop_in_other_queue = job(Status.SCHEDULED, queue="other")
    response = confirmed(
        admin_client,
        "cancel_selected",
        [],
        url=f"{CHANGELIST}?queue=scheduler-jobs",
        select_across="1",
        _selected_action="0",
    )
    assert messages_of(response) == ["Cancelled 3 jobs; skipped 1 not scheduled or enqueued."]
    assert ScheduledJob.objects.get(pk=noop_in_other_queue.pk).status == Status.SCHEDULED


def _cancel_all(client, url: str) -> list[str]:
    """Cancel with "select all" on the list at ``url``; the messages it answers with."""
    response = client.post(
        url,
        {"action": "cancel_selected", "index": "0", "select_across": "1", "_selected_action": "0"},
        follow=True,
    )
    return messages_of(response)


def _says_it_draws_from_a_bounded_set(client, url: str, count: str, refused: str) -> None:
    """The list at ``url`` shows ``count``, and refuses "select all" saying ``refused``."""
    assert count in client.get(url).content.decode()
    assert _cancel_all(client, url) == [
        f"{refused}, or select jobs on this page. No job was changed."
    ]


def test_select_all_on_a_list_longer_than_its_count_shows_is_refused(admin_client, monkeypatch):
    # The list counts up to COUNT_LIMIT and says "10001": acting on every matching row,
    # millions maybe, in one request, is not what the operator was shown.
    monkeypatch.setattr(changelist, "COUNT_LIMIT", 5)
    for _ in range(6):
        job(Status.SCHEDULED)
    assert _cancel_all(admin_client, CHANGELIST) == [
        "More than 5 jobs match: narrow the list with its filters, or select jobs on "
        "this page. No job was changed."
    ]
    assert set(ScheduledJob.objects.values_list("status", flat=True)) == {Status.SCHEDULED}


def test_an_overdue_list_past_its_latest_jobs_with_a_filter_says_so_and_refuses_select_all(
    admin_client, monkeypatch
):
    # Overdue takes the latest COUNT_LIMIT + 1 overdue jobs of each status, the other
    # filters then those alone: the list hid the oldest overdue jobs, the most urgent,
    # without a word ("1 scheduled job"), and "select all" left them out.
    monkeypatch.setattr(changelist, "COUNT_LIMIT", 5)
    for minutes in range(2, 9):  # 7 overdue, the two oldest (7 and 8 minutes) recorders
        job(
            Status.SCHEDULED,
            run_at=T0 - timedelta(minutes=minutes),
            task_name="testapp.record" if minutes >= 7 else "testapp.noop",
        )
    url = f"{CHANGELIST}?run_at=overdue&task=testapp.record"
    _says_it_draws_from_a_bounded_set(
        admin_client,
        url,
        "\n1 among the latest 6 overdue scheduled jobs of each status: filter by status, "
        "not by Overdue, to list the older ones too.\n",
        "More than 5 jobs of a status are overdue and the list shows the latest: filter by "
        "status, not by Overdue",
    )
    assert ScheduledJob.objects.filter(status=Status.SCHEDULED).count() == 7
    # Filtered by a status no more of which are overdue, the list is whole.
    job(Status.ENQUEUED, run_at=T0 - timedelta(minutes=3))
    enqueued = admin_client.get(f"{CHANGELIST}?run_at=overdue&status__exact=enqueued")
    assert "\n1 scheduled job\n" in enqueued.content.decode()
    # More than it counts among them, it says so too.
    noop = admin_client.get(f"{CHANGELIST}?run_at=overdue&status__exact=scheduled")
    assert "\nMore than 5 among the latest 6 overdue scheduled jobs" in noop.content.decode()
    # Whole when no status has more: as before.
    ScheduledJob.objects.filter(run_at=T0 - timedelta(minutes=2)).delete()
    assert "\n2 scheduled jobs\n" in admin_client.get(url).content.decode()


def test_a_key_search_past_its_first_keys_with_a_filter_says_so_and_refuses_select_all(
    admin_client, monkeypatch
):
    # The search takes the first COUNT_LIMIT + 1 keys, the filters then those alone: the
    # list said "0 jobs", and "select all" cancelled none of the scheduled ones, which ran.
    monkeypatch.setattr(changelist, "COUNT_LIMIT", 5)
    for number in range(1, 13):
        job(
            Status.SUCCEEDED if number <= 6 else Status.SCHEDULED,
            unique_key=f"payment-{number:02}",
        )
    _says_it_draws_from_a_bounded_set(
        admin_client,
        f"{CHANGELIST}?q=payment-&status__exact=scheduled",
        "0 among the first 6 scheduled jobs whose unique key starts so: narrow the search.",
        "More than 5 unique keys start as the search does: narrow the search",
    )
    assert ScheduledJob.objects.filter(status=Status.SCHEDULED).count() == 6
    # A search its first keys hold is whole: as before.
    narrow = admin_client.get(f"{CHANGELIST}?q=payment-1&status__exact=scheduled")
    assert "\n3 scheduled jobs\n" in narrow.content.decode()


@pytest.mark.parametrize("select_across", ["0", "1"], ids=["ticked", "all selected"])
def test_a_ticked_job_that_left_the_lists_filter_meanwhile_is_still_acted_on(
    admin_client, select_across
):
    # Ticked on a list of scheduled jobs, then sent by the dispatcher (now enqueued): the
    # operator asked to cancel that job, and an enqueued job can be cancelled. "Select
    # all" is every job the filters match now and every job the page showed.
    ticked = job(Status.SCHEDULED)
    ScheduledJob.objects.filter(pk=ticked.pk).update(
        **{
            field: value
            for field, value in job_fields(Status.ENQUEUED, run_at=T0).items()
            if field in ("status", "dispatch_token", "enqueued_at", "resend_at")
        }
    )
    response = confirmed(
        admin_client,
        "cancel_selected",
        [ticked],
        url=f"{CHANGELIST}?status__exact=scheduled",
        select_across=select_across,
    )
    assert messages_of(response) == ["Cancelled 1 job."]
    assert ScheduledJob.objects.get(pk=ticked.pk).status == Status.CANCELLED


def test_select_all_reschedules_every_job_matching_the_filters(admin_client):
    moved = [job(Status.SCHEDULED) for _ in range(3)]
    other = job(Status.SCHEDULED, queue="other")
    url = f"{CHANGELIST}?queue=scheduler-jobs"
    chosen = {"action": "reschedule_selected", "index": "0", "select_across": "1"}
    page = admin_client.post(url, {**chosen, "_selected_action": str(moved[0].pk)})
    assert page.status_code == 200
    form = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.content.decode())
    data: dict[str, list[str]] = {}
    for name, value in form:
        data.setdefault(name, []).append(value)
    data.update(
        apply=["Reschedule"],
        mode=["by"],
        offset_amount=["2"],
        offset_unit=["hours"],
        time_zone=["UTC"],
    )
    response = admin_client.post(url, data, follow=True)
    assert messages_of(response) == ["Rescheduled 3 jobs."]
    assert {j.run_at for j in ScheduledJob.objects.filter(pk__in=[j.pk for j in moved])} == {
        T0 + timedelta(hours=2)
    }
    assert ScheduledJob.objects.get(pk=other.pk).run_at == T0


@pytest.mark.parametrize(
    ("action", "status", "extra", "verb"),
    [
        ("cancel_selected", Status.SCHEDULED, {"apply": "Cancel jobs"}, "Cancelled"),
        ("run_selected_now", Status.EXPIRED, {"apply": "Run now"}, "Set to run now"),
        ("retry_selected", Status.FAILED, {"apply": "Retry"}, "Retried"),
        (
            "reschedule_selected",
            Status.ENQUEUED,
            {"apply": "Reschedule", "mode": "by", "offset_amount": "5", "offset_unit": "minutes"},
            "Rescheduled",
        ),
        (
            "reschedule_selected",
            Status.SCHEDULED,
            {
                "apply": "Reschedule",
                "mode": "to",
                "run_at_local": "2026-12-24T18:00",
                "offset_unit": "minutes",
            },
            "Rescheduled",
        ),
    ],
)
def test_an_action_on_many_jobs_takes_as_many_queries_as_on_a_few(
    admin_client, action, status, extra, verb
):
    # Workers down for half an hour leave thousands of jobs for one action: job by job,
    # five round trips each, ten thousand took longer than a proxy waits for the answer.
    def queries_for(count: int) -> int:
        jobs = [job(status, run_at=T0 + timedelta(days=1)) for _ in range(count)]
        running = job(Status.RUNNING)  # skipped: both outcomes are counted
        with CaptureQueriesContext(connection) as queries:
            response = act(admin_client, action, [*jobs, running], time_zone="UTC", **extra)
        assert messages_of(response)[0].startswith(f"{verb} {count} jobs; skipped 1 ")
        assert ScheduledJob.objects.get(pk=running.pk).status == Status.RUNNING
        return len(queries)

    assert queries_for(40) == queries_for(2)
