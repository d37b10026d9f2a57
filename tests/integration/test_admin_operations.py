"""The operator's controls in the admin: deadlines, reasons and the audit trail, pause and
resume, retry with a new deadline, re-send; and what a view-only user cannot do."""

import re
from datetime import timedelta

import django
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from freezegun import freeze_time

from payments.models import Payment
from payments.services import authorize_payment
from scheduler import services
from scheduler.admin import changelist
from scheduler.models import AuditEntry, Pause, ScheduledJob
from tests.integration.admin_helpers import (
    ADD,
    CHANGELIST,
    MONITORING,
    T0,
    Status,
    change_url,
    confirmed,
    job,
    long_history,
    messages_of,
    staff_client,
)
from tests.integration.test_admin_actions import act
from tests.integration.test_admin_forms import form_data, reschedule_data

pytestmark = pytest.mark.django_db

Action = AuditEntry.Action
PAUSE = reverse("admin:scheduler_pause")


@pytest.fixture(autouse=True)
def setup(settings):
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.noop"]
    with freeze_time(T0) as frozen:
        yield frozen


def trail():
    return [
        (entry.action, entry.actor, entry.reason, entry.job_id)
        for entry in AuditEntry.objects.order_by("pk")
    ]


def test_the_schedule_form_takes_a_deadline_and_a_reason(admin_client):
    response = admin_client.post(
        ADD,
        form_data(
            run_at_local="2026-12-01T09:30:15",
            deadline_local="2026-12-01T10:30",
            reason="ticket 42",
        ),
    )
    assert response.status_code == 302
    created = ScheduledJob.objects.get()
    # Read in Europe/Paris (UTC+1), to the second.
    assert created.run_at.isoformat() == "2026-12-01T08:30:15+00:00"
    assert created.deadline.isoformat() == "2026-12-01T09:30:00+00:00"
    assert trail() == [(Action.SCHEDULE, "admin", "ticket 42", created.pk)]


def test_a_deadline_before_the_run_time_is_shown_on_its_field(admin_client):
    response = admin_client.post(ADD, form_data(deadline_local="2026-12-01T09:00"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Deadline must be after run_at" in errors["deadline_local"][0]
    assert not ScheduledJob.objects.exists()


def test_a_job_page_shows_times_to_the_second_its_deadline_and_its_audit_trail(admin_client):
    admin_client.post(ADD, form_data(deadline_local="2026-12-02T00:00", reason="first"))
    created = ScheduledJob.objects.get()
    admin_client.post(
        change_url(created),
        reschedule_data(delay_amount="90", delay_unit="minutes", reason="moved up"),
    )
    content = admin_client.get(change_url(created)).content.decode()
    assert "2026-11-24 13:30:00" in content  # run at, rescheduled 90 minutes from now
    assert "2026-12-01 23:00:00" in content  # the deadline
    assert "audit trail" in content.lower()
    for text in ("Schedule", "Reschedule", "first", "moved up", "2026-11-24 12:00:00"):
        assert text in content
    assert trail() == [
        (Action.SCHEDULE, "admin", "first", created.pk),
        (Action.RESCHEDULE, "admin", "moved up", created.pk),
    ]


def test_actions_ask_for_a_reason_and_record_one_entry_per_changed_job(admin_client):
    jobs = [job(), job(Status.ENQUEUED), job(Status.SUCCEEDED)]
    page = admin_client.get(CHANGELIST).content.decode()
    assert 'name="reason"' in page
    response = confirmed(admin_client, "cancel_selected", jobs, reason="customer cancelled")
    assert messages_of(response) == ["Cancelled 2 jobs; skipped 1 not scheduled or enqueued."]
    assert trail() == [
        (Action.CANCEL, "admin", "customer cancelled", jobs[0].pk),
        (Action.CANCEL, "admin", "customer cancelled", jobs[1].pk),
    ]


def test_the_bulk_reschedule_carries_the_reason_to_its_own_page(admin_client):
    scheduled = job(run_at=T0 + timedelta(hours=1))
    page = act(admin_client, "reschedule_selected", [scheduled], reason="maintenance window")
    assert 'value="maintenance window"' in page.content.decode()
    act(
        admin_client,
        "reschedule_selected",
        [scheduled],
        apply="1",
        mode="by",
        offset_amount="30",
        offset_unit="minutes",
        time_zone="UTC",
        reason="maintenance window",
    )
    assert trail() == [(Action.RESCHEDULE, "admin", "maintenance window", scheduled.pk)]
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(minutes=90)


def test_the_expired_status_has_its_label_and_filter(admin_client):
    expired = job(Status.EXPIRED)
    content = admin_client.get(f"{CHANGELIST}?status__exact=expired").content.decode()
    assert '<span class="job-status job-status-expired">Expired</span>' in content
    assert f">{expired.pk}</a>" in content


def test_an_expired_job_is_retried_from_its_page_with_a_new_deadline(admin_client):
    expired = job(Status.EXPIRED, run_at=T0 - timedelta(hours=2), deadline=T0 - timedelta(hours=1))
    page = admin_client.get(change_url(expired)).content.decode()
    assert 'id="retry-form"' in page
    assert 'id="resend-form"' not in page
    retry_url = reverse("admin:scheduler_scheduledjob_retry", args=[expired.pk])
    # Without a new deadline, the old one (already past) forbids it.
    response = admin_client.post(retry_url, {"time_zone": "UTC", "reason": "x"}, follow=True)
    assert "give a new deadline" in messages_of(response)[0]
    assert ScheduledJob.objects.get(pk=expired.pk).status == Status.EXPIRED
    response = admin_client.post(
        retry_url,
        {
            "time_zone": "UTC",
            "deadline_local": "2026-11-24T18:00:00",
            "reason": "card re-authorized",
        },
        follow=True,
    )
    assert messages_of(response) == [f"Job #{expired.pk} is scheduled again."]
    revived = ScheduledJob.objects.get(pk=expired.pk)
    assert (revived.status, revived.run_at, revived.deadline.isoformat()) == (
        Status.SCHEDULED,
        T0,
        "2026-11-24T18:00:00+00:00",
    )
    assert trail() == [(Action.RETRY, "admin", "card re-authorized", expired.pk)]


def test_an_enqueued_job_is_re_sent_from_its_page(admin_client):
    enqueued = job(Status.ENQUEUED)
    page = admin_client.get(change_url(enqueued)).content.decode()
    assert 'id="resend-form"' in page
    assert 'id="retry-form"' not in page
    resend_url = reverse("admin:scheduler_scheduledjob_resend", args=[enqueued.pk])
    response = admin_client.post(resend_url, {"reason": "in the DLQ"}, follow=True)
    assert (
        "sent again at the dispatcher's next tick, with the same token"
        in (messages_of(response)[0])
    )
    assert ScheduledJob.objects.get(pk=enqueued.pk).resend_at == T0
    assert trail() == [(Action.RESEND, "admin", "in the DLQ", enqueued.pk)]


def test_re_sending_a_job_that_already_ran_explains_why_not(admin_client):
    finished = job(Status.SUCCEEDED)
    assert 'id="resend-form"' not in admin_client.get(change_url(finished)).content.decode()
    resend_url = reverse("admin:scheduler_scheduledjob_resend", args=[finished.pk])
    response = admin_client.post(resend_url, {"reason": "in the DLQ"}, follow=True)
    assert messages_of(response) == [
        f"cannot resend job {finished.pk}: it is succeeded; only a job that is enqueued can be"
    ]
    assert not AuditEntry.objects.exists()


def test_pause_and_resume_from_the_monitoring_page(admin_client):
    page = admin_client.get(MONITORING).content.decode()
    assert 'id="pause-form"' in page
    assert "Nothing is paused." in page
    response = admin_client.post(
        PAUSE, {"task": "testapp.noop", "queue": "", "reason": "gateway down"}, follow=True
    )
    assert messages_of(response) == [
        "Paused task testapp.noop: none of its jobs starts until it is resumed."
    ]
    paused = Pause.objects.get()
    assert (paused.task_name, paused.queue, paused.paused_by, paused.reason) == (
        "testapp.noop",
        "",
        "admin",
        "gateway down",
    )
    page = response.content.decode()
    assert "Paused: task testapp.noop." in page
    assert "gateway down" in page
    # Twice is refused, with the service's words.
    response = admin_client.post(
        PAUSE, {"task": "testapp.noop", "queue": "", "reason": "again"}, follow=True
    )
    assert messages_of(response) == ["task testapp.noop is already paused"]
    resume = reverse("admin:scheduler_resume", args=[paused.pk])
    response = admin_client.post(resume, {"reason": "gateway back"}, follow=True)
    assert messages_of(response) == [
        "Resumed task testapp.noop: its held jobs run once each, oldest first."
    ]
    assert not Pause.objects.exists()
    assert [(action, reason) for action, _, reason, _ in trail()] == [
        (Action.PAUSE, "gateway down"),
        (Action.RESUME, "gateway back"),
    ]
    # A second operator's page, loaded before the first resumed: a bare 404 page said
    # nothing of what happened.
    response = admin_client.post(resume, {"reason": "gateway back"}, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        "That pause was lifted already, after the page was loaded: nothing was changed."
    ]
    assert len(trail()) == 2


def test_running_now_a_job_of_a_paused_kind_says_it_waits_for_the_resume(admin_client):
    # "Set to run now 1 job." while the job stayed held: the operator waited for it.
    services.pause("testapp.noop", None, reason="gateway down", actor="ops")
    paused, free = job(Status.FAILED), job(Status.FAILED, task_name="testapp.fail")
    response = confirmed(admin_client, "run_selected_now", [paused, free])
    assert messages_of(response) == [
        "Set to run now 2 jobs.",
        "1 of them is of a paused kind and starts only once the pause is lifted (see Monitoring).",
    ]


def test_running_now_counts_the_held_jobs_it_moved_not_the_list_filter(admin_client):
    # Counted again through the list's filter (failed) after the action: "Select all"
    # of 60 failed jobs said 50 (those ticked on the page), and a job the action
    # skipped (past its deadline) was counted as waiting for the pause.
    services.pause("testapp.noop", None, reason="gateway down", actor="ops")
    failed = [job(Status.FAILED, run_at=T0 - timedelta(hours=1)) for _ in range(60)]
    response = confirmed(
        admin_client,
        "run_selected_now",
        failed[:50],
        url=f"{CHANGELIST}?status__exact=failed",
        select_across="1",
    )
    assert messages_of(response) == [
        "Set to run now 60 jobs.",
        "60 of them are of a paused kind and start only once the pause is lifted (see Monitoring).",
    ]
    retried = job(Status.FAILED, run_at=T0 - timedelta(hours=1))
    skipped = job(run_at=T0 - timedelta(minutes=2), deadline=T0 - timedelta(minutes=1))
    response = confirmed(admin_client, "run_selected_now", [retried, skipped])
    assert messages_of(response)[1] == (
        "1 of them is of a paused kind and starts only once the pause is lifted (see Monitoring)."
    )


@pytest.mark.parametrize("action", ["retry_selected", "reschedule_selected"])
def test_retrying_or_rescheduling_a_job_of_a_paused_kind_says_it_waits_for_the_resume(
    admin_client, action
):
    # Only "Run now" said so: retried or rescheduled, the job then waited unexplained.
    services.pause("testapp.noop", None, reason="gateway down", actor="ops")
    if action == "retry_selected":
        response = confirmed(admin_client, action, [job(Status.FAILED)])
    else:
        response = act(
            admin_client,
            action,
            [job(Status.SCHEDULED, run_at=T0 + timedelta(days=1))],
            apply="Reschedule",
            mode="to",
            run_at_local="2026-12-24T18:00",
            time_zone="UTC",
            offset_unit="minutes",
        )
    assert messages_of(response)[-1] == (
        "1 of them is of a paused kind and starts only once the pause is lifted (see Monitoring)."
    )


def test_retrying_a_job_at_a_time_in_the_past_is_refused(admin_client):
    # Taken as given: the job was due at once, and ran now, not when the operator said.
    failed = job(Status.FAILED, run_at=T0 - timedelta(days=1))
    response = admin_client.post(
        reverse("admin:scheduler_scheduledjob_retry", args=[failed.pk]),
        {"run_at_local": "2025-12-01T09:00", "time_zone": "Europe/Paris", "reason": ""},
        follow=True,
    )
    said = response.content.decode()
    assert "is in the past" in said
    # The way this form runs it as soon as possible; "in 0 minutes" is the add form's.
    assert "leave “Run at” empty" in said
    assert "in 0 minutes" not in said
    assert ScheduledJob.objects.get(pk=failed.pk).status == Status.FAILED


@pytest.mark.parametrize("status", [Status.ENQUEUED, Status.FAILED])
def test_each_form_on_a_job_page_labels_its_own_fields(admin_client, status):
    # The re-send form's "Reason" label pointed at the reschedule form's field (both
    # id_reason): an operator who clicked it typed the reason into the other form.
    html = admin_client.get(change_url(job(status, run_at=T0 + timedelta(hours=1)))).content
    ids = re.findall(r'\bid="([^"]+)"', html.decode())
    assert len(ids) > 5
    assert [name for name in set(ids) if ids.count(name) > 1] == []
    for target in re.findall(r'<label for="([^"]+)"', html.decode()):
        assert target in ids


def test_pausing_a_queue_no_job_was_ever_on_warns_of_a_misspelt_name(admin_client):
    # In an incident, "scheduler_jobs" for "scheduler-jobs" paused nothing, and was told
    # "none of its jobs starts" while the real queue's jobs went on.
    job(Status.SCHEDULED, queue="reports")
    response = admin_client.post(
        PAUSE, {"task": "", "queue": "scheduler_jobs", "reason": "gateway down"}, follow=True
    )
    assert messages_of(response) == [
        "No job has been on queue scheduler_jobs: check its name. Jobs are on queues "
        "scheduler-jobs, reports.",
        "Paused queue scheduler_jobs: none of its jobs starts until it is resumed.",
    ]
    assert Pause.objects.get().queue == "scheduler_jobs"
    # A queue with jobs, or the default one, is paused without a word more.
    for queue in ("reports", "scheduler-jobs"):
        response = admin_client.post(PAUSE, {"queue": queue, "reason": "x"}, follow=True)
        assert len(messages_of(response)) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": "", "queue": "", "reason": "x"}, "task or queue must be given"),
        ({"task": "", "queue": "no spaces", "reason": "x"}, "queue 'no spaces' is not valid"),
        ({"task": "testapp.noop", "queue": ""}, "Reason: This field is required."),
    ],
)
def test_a_bad_pause_is_refused_with_a_message(admin_client, data, message):
    response = admin_client.post(PAUSE, data, follow=True)
    assert message in messages_of(response)[0]
    assert not Pause.objects.exists()


def test_a_view_only_user_can_neither_pause_resume_retry_nor_re_send():
    viewer = staff_client("viewer", "view_scheduledjob")
    paused = Pause.objects.create(task_name="testapp.noop")
    enqueued, expired = job(Status.ENQUEUED), job(Status.EXPIRED)
    page = viewer.get(MONITORING).content.decode()
    assert 'id="pause-form"' not in page
    assert "Resume" not in page
    for url in (
        PAUSE,
        reverse("admin:scheduler_resume", args=[paused.pk]),
        reverse("admin:scheduler_scheduledjob_retry", args=[expired.pk]),
        reverse("admin:scheduler_scheduledjob_resend", args=[enqueued.pk]),
    ):
        assert viewer.post(url, {"task": "testapp.noop", "reason": "x"}).status_code == 403
    for one in (enqueued, expired):
        content = viewer.get(change_url(one)).content.decode()
        assert "retry-form" not in content
        assert "resend-form" not in content
    assert Pause.objects.count() == 1
    assert not AuditEntry.objects.exists()


def test_the_operations_answer_only_posts(admin_client):
    assert admin_client.get(PAUSE).status_code == 405


def test_the_payments_admin_shows_the_authorization_expiry_and_a_missed_capture(admin_client):
    payment = authorize_payment(amount="10.00", currency="EUR")
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.CAPTURE_MISSED)
    content = admin_client.get(reverse("admin:payments_payment_changelist")).content.decode()
    assert '<span class="job-status job-status-capture_missed">Capture missed</span>' in content
    assert "2026-12-24 12:00:00" in content  # authorized at T0, expires 30 days later
    content = admin_client.get(
        reverse("admin:payments_payment_changelist") + "?status__exact=capture_missed"
    ).content.decode()
    assert f"{payment.pk}</a>" in content


def test_the_audit_trail_lists_every_action_with_or_without_a_job(admin_client):
    scheduled = job()
    confirmed(admin_client, "cancel_selected", [scheduled], reason="duplicate")
    admin_client.post(PAUSE, {"task": "testapp.noop", "queue": "", "reason": "incident"})
    content = admin_client.get(reverse("admin:scheduler_auditentry_changelist")).content.decode()
    assert f'<a href="{change_url(scheduled)}">#{scheduled.pk}</a>' in content
    for text in ("Cancel", "duplicate", "Pause", "incident", "2026-11-24 12:00:00"):
        assert text in content
    entry = AuditEntry.objects.get(action=Action.PAUSE)
    page = admin_client.get(reverse("admin:scheduler_auditentry_change", args=[entry.pk]))
    assert page.status_code == 200
    assert "_save" not in page.content.decode()  # read-only


AUDIT_LIST = reverse("admin:scheduler_auditentry_changelist")


@pytest.mark.parametrize("model", ["auditentry", "jobattempt"])
def test_the_audit_and_attempt_lists_say_when_they_stopped_counting(
    admin_client, monkeypatch, model
):
    # They printed the paginator's cap as the total ("10001 audit entries", of millions).
    monkeypatch.setattr(changelist, "COUNT_LIMIT", 5)
    long_history(job(Status.FAILED), 8)
    content = admin_client.get(reverse(f"admin:scheduler_{model}_changelist")).content.decode()
    plural = {"auditentry": "audit entries", "jobattempt": "job attempts"}[model]
    said = f"More than 5 {plural}: narrow the list with filters or search, or list <a href="
    assert said in content


@pytest.mark.parametrize("model", ["scheduledjob", "auditentry", "jobattempt"])
def test_the_lists_paginate_with_the_markup_of_djangos_version(admin_client, model):
    # The capped count's template copied 5.2's paragraph: on Django 6.0 the lists lost
    # the navigation landmark every other admin list has.
    long_history(job(Status.FAILED), 3)
    content = admin_client.get(reverse(f"admin:scheduler_{model}_changelist")).content.decode()
    landmark = '<nav class="paginator" aria-labelledby="pagination">' in content
    paragraph = '<p class="paginator">' in content
    assert (landmark, paragraph) == ((True, False) if django.VERSION >= (6,) else (False, True))


def test_the_audit_list_counts_no_facet_over_the_whole_trail(admin_client):
    # "Show counts" counted every action's entries over the whole table, uncapped, on
    # every page after it (0.3-0.5 s at 2 million entries).
    services.cancel(job(), actor="admin", reason="duplicate")
    assert "Show counts" not in admin_client.get(AUDIT_LIST).content.decode()
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(AUDIT_LIST, {"_facets": "True"}).status_code == 200
    assert not [query for query in queries if "FILTER (WHERE" in query["sql"]]


def test_the_audit_list_finds_an_actor_by_its_exact_name_with_spaces(admin_client):
    # Django split the search into words, each of which had to be the whole name.
    services.cancel(job(), actor="Payments Service", reason="duplicate")
    services.cancel(job(), actor="Payments", reason="other")
    for search in ("Payments Service", "payments service", " Payments Service "):
        listed = admin_client.get(AUDIT_LIST, {"q": search}).context["cl"].result_list
        assert [entry.actor for entry in listed] == ["Payments Service"], search


def test_a_job_history_button_leads_to_its_audit_trail(admin_client):
    # Django's history page reads only its own log, which the services never write: a
    # cancelled job's said "This object doesn't have a change history".
    cancelled = job()
    services.cancel(cancelled, actor="admin", reason="duplicate")
    history = reverse("admin:scheduler_scheduledjob_history", args=[cancelled.pk])
    response = admin_client.get(history)
    assert response.status_code == 302
    assert response["Location"] == f"{AUDIT_LIST}?job__id__exact={cancelled.pk}"
    listed = admin_client.get(response["Location"]).context["cl"].result_list
    assert [(entry.action, entry.job_id) for entry in listed] == [(Action.CANCEL, cancelled.pk)]
    # Without the audit list's view permission, the job's own page is where its trail is.
    viewer = staff_client("viewer", "view_scheduledjob")
    assert viewer.get(history)["Location"] == change_url(cancelled)


def test_a_scheduled_job_page_moves_the_deadline_with_the_run_time(admin_client):
    scheduled = job(run_at=T0 + timedelta(hours=1), deadline=T0 + timedelta(hours=2))
    # Moving it past its own deadline needs a new one: the service's refusal is shown.
    response = admin_client.post(
        change_url(scheduled), reschedule_data(delay_amount="3", delay_unit="hours"), follow=True
    )
    assert "give a new deadline" in messages_of(response)[0]
    response = admin_client.post(
        change_url(scheduled),
        reschedule_data(delay_amount="3", delay_unit="hours", deadline_local="2026-11-24T14:00"),
    )
    assert "The deadline must be after the new run time." in str(
        response.context["adminform"].form.errors
    )
    admin_client.post(
        change_url(scheduled),
        reschedule_data(
            delay_amount="3", delay_unit="hours", deadline_local="2026-11-24T16:00", reason="r"
        ),
    )
    moved = ScheduledJob.objects.get(pk=scheduled.pk)
    assert (moved.run_at, moved.deadline.isoformat()) == (
        T0 + timedelta(hours=3),
        "2026-11-24T16:00:00+00:00",
    )
