"""Scheduling and rescheduling one job from the admin's forms."""

import html
import re
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.admin.views.main import PAGE_VAR
from django.urls import reverse
from freezegun import freeze_time

from scheduler import services, states
from scheduler.admin import changelist
from scheduler.admin.attempts import JobAttemptAdmin
from scheduler.admin.audit import AuditEntryAdmin
from scheduler.admin.forms import RescheduleJobForm
from scheduler.models import AuditEntry, JobAttempt, ScheduledJob
from tests.integration.admin_helpers import (
    ADD,
    CHANGELIST,
    T0,
    Status,
    change_url,
    form_as_posted,
    job,
    job_fields,
    long_history,
    messages_of,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_test_tasks")]


@pytest.fixture
def allow_test_tasks(settings):
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.noop", "testapp.record"]


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0) as frozen_time:
        yield frozen_time


def form_data(**overrides):
    data = {
        "task_name": "testapp.noop",
        "args_json": '[1, "two"]',
        "kwargs_json": '{"three": 3}',
        "queue_name": "",
        "attempts_limit": "",
        "key": "",
        "when": "at",
        "run_at_local": "2026-12-01T09:30",
        "time_zone": "Europe/Paris",
        "delay_amount": "",
        "delay_unit": "minutes",
        # New on each page: each call is another page's submission.
        "submission": str(uuid.uuid4()),
    }
    data.update(overrides)
    return data


def reschedule_data(**overrides):
    # The attempts' and audit trail's management forms travel with every change form.
    data = {
        "when": "in",
        "delay_amount": "5",
        "delay_unit": "minutes",
        "time_zone": "UTC",
        "history-TOTAL_FORMS": "0",
        "history-INITIAL_FORMS": "0",
        "audit_entries-TOTAL_FORMS": "0",
        "audit_entries-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def errors_of(response):
    assert response.status_code == 200, response
    return response.context["adminform"].form.errors


def test_add_page_offers_only_allow_listed_registered_tasks(admin_client, settings):
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.record", "testapp.missing"]
    response = admin_client.get(ADD)
    choices = response.context["adminform"].form.fields["task_name"].choices
    assert choices == [("testapp.record", "testapp.record")]
    assert b'type="datetime-local"' in response.content
    assert b"browser-time-zone.js" in response.content


def test_schedule_at_a_local_time_stores_utc(admin_client):
    response = admin_client.post(ADD, form_data(queue_name="ops", attempts_limit="2", key="k1"))
    assert response.status_code == 302
    assert response["Location"] == CHANGELIST
    job = ScheduledJob.objects.get()
    assert job.task_name == "testapp.noop"
    assert job.args == [1, "two"]
    assert job.kwargs == {"three": 3}
    assert job.run_at == datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    assert (job.queue, job.max_attempts, job.unique_key) == ("ops", 2, "k1")
    assert job.status == Status.SCHEDULED


def test_schedule_in_a_number_of_hours_uses_defaults(admin_client, settings):
    settings.SCHEDULER_DEFAULT_MAX_ATTEMPTS = 4
    response = admin_client.post(
        ADD, form_data(when="in", delay_amount="3", delay_unit="hours", args_json="[]")
    )
    assert response.status_code == 302
    job = ScheduledJob.objects.get()
    assert job.run_at == T0 + timedelta(hours=3)
    assert (job.queue, job.max_attempts, job.unique_key) == ("scheduler-jobs", 4, None)


def test_in_zero_minutes_means_as_soon_as_possible(admin_client):
    admin_client.post(ADD, form_data(when="in", delay_amount="0"))
    assert ScheduledJob.objects.get().run_at == T0


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"task_name": "testapp.fail"},
            "task_name",
            "Select a valid choice. testapp.fail is not one of the available choices.",
        ),
        ({"args_json": "[1,"}, "args_json", "Arguments are not valid JSON: Expecting value"),
        ({"args_json": '{"a": 1}'}, "args_json", "Arguments must be a JSON list"),
        ({"args_json": "[NaN]"}, "args_json", "Arguments must not contain NaN"),
        ({"kwargs_json": "[1]"}, "kwargs_json", "Keyword arguments must be a JSON object"),
        ({"kwargs_json": '{"a": 1e999}'}, "kwargs_json", "must not contain NaN or infinite"),
        ({"kwargs_json": ""}, "kwargs_json", "This field is required."),
        # Deeper than Python's stack lets json read (a RecursionError, a 500).
        ({"args_json": "[" * 980 + "]" * 980}, "args_json", "Arguments are nested too deeply"),
        ({"kwargs_json": '{"a": ' * 980 + "1" + "}" * 980}, "kwargs_json", "nested too deeply"),
        # Longer than Python converts (sys.get_int_max_str_digits(): a ValueError, a 500).
        ({"args_json": f"[{'7' * 4301}]"}, "args_json", "a number of more than 4300 digits"),
        ({"run_at_local": ""}, "run_at_local", "Enter a date and time."),
        ({"run_at_local": "tomorrow"}, "run_at_local", "Enter a valid date/time."),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "Select a valid choice."),
        # In the database, not a place: the server's own zone, tzdata's placeholder.
        ({"time_zone": "localtime"}, "time_zone", "Select a valid choice."),
        ({"time_zone": "Factory"}, "time_zone", "Select a valid choice."),
        (
            {"run_at_local": "2026-11-24T12:00", "time_zone": "Europe/Paris"},
            "run_at_local",
            "2026-11-24 12:00 in Europe/Paris is in the past",
        ),
        (
            {"run_at_local": "2027-03-28T02:30", "time_zone": "Europe/Paris"},
            "run_at_local",
            "2027-03-28 02:30 does not exist in Europe/Paris",
        ),
        (
            {"run_at_local": "2027-10-31T02:30", "time_zone": "Europe/Paris"},
            "run_at_local",
            "2027-10-31 02:30 happens twice in Europe/Paris",
        ),
        ({"when": "in", "delay_amount": ""}, "delay_amount", "Enter how many minutes"),
        ({"when": "in", "delay_amount": "-1"}, "delay_amount", "greater than or equal to 0"),
        ({"when": "in", "delay_amount": "100001"}, "delay_amount", "less than or equal to"),
        ({"when": "later"}, "when", "Select a valid choice."),
        ({"queue_name": "has.dots"}, "queue_name", "A queue name is 1-80 letters"),
        ({"attempts_limit": "0"}, "attempts_limit", "greater than or equal to 1"),
    ],
)
def test_each_invalid_input_is_reported_on_its_field(admin_client, overrides, field, message):
    errors = errors_of(admin_client.post(ADD, form_data(**overrides)))
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert not ScheduledJob.objects.exists()


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (Status.ENQUEUED, "cancel it or choose another key"),
        # It cannot be cancelled: the advice led to another refusal.
        (Status.RUNNING, "it is running: wait for it to end or choose another key"),
    ],
)
def test_a_unique_key_held_by_an_active_job_is_reported(admin_client, status, advice):
    holder = job(status, unique_key="k1")
    errors = errors_of(admin_client.post(ADD, form_data(key="k1")))
    assert errors["key"] == [f"Job #{holder.pk} is active with this unique key; {advice}."]
    assert ScheduledJob.objects.count() == 1


def test_a_unique_key_of_a_finished_job_can_be_reused(admin_client):
    job(Status.SUCCEEDED, unique_key="k1")
    assert admin_client.post(ADD, form_data(key="k1")).status_code == 302
    assert ScheduledJob.objects.filter(unique_key="k1", status=Status.SCHEDULED).exists()


def test_a_task_whose_name_a_job_cannot_hold_is_reported_on_its_field(
    admin_client, settings, long_named_task
):
    settings.SCHEDULER_ADMIN_TASKS = [long_named_task.name]
    data = form_data(task_name=long_named_task.name, args_json="[]", kwargs_json="{}")
    errors = errors_of(admin_client.post(ADD, data))
    assert list(errors) == ["task_name"]
    assert "Task must be a non-empty string of at most 255 characters" in errors["task_name"][0]
    assert not ScheduledJob.objects.exists()


def test_a_task_removed_from_the_allow_list_cannot_be_posted(admin_client, settings):
    settings.SCHEDULER_ADMIN_TASKS = []
    errors = errors_of(admin_client.post(ADD, form_data()))
    assert "task_name" in errors


def test_the_add_form_submitted_twice_schedules_one_job(admin_client):
    # A double click on Save, or a browser's resubmit: two payment captures.
    data = form_data()
    assert admin_client.post(ADD, data).status_code == 302
    again = admin_client.post(ADD, data)
    assert again.status_code == 200
    assert "this form was submitted already" in " ".join(errors_of(again)["__all__"])
    assert ScheduledJob.objects.count() == 1
    assert AuditEntry.objects.count() == 1
    # Another page's form schedules another job.
    assert admin_client.post(ADD, form_data()).status_code == 302
    assert ScheduledJob.objects.count() == 2


def test_a_scheduled_job_page_reschedules_through_the_service(admin_client):
    scheduled = job(run_at=T0 + timedelta(days=1))
    page = admin_client.get(change_url(scheduled))
    assert isinstance(page.context["adminform"].form, RescheduleJobForm)
    response = admin_client.post(
        change_url(scheduled),
        reschedule_data(delay_amount="2", delay_unit="days"),
    )
    assert response.status_code == 302
    scheduled.refresh_from_db()
    assert scheduled.run_at == T0 + timedelta(days=2)
    assert scheduled.status == Status.SCHEDULED


def test_a_job_with_a_long_history_is_rescheduled_from_its_page(admin_client):
    # Every history row on the page posted hidden fields: past Django's
    # DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000), the operator's reschedule was a 400.
    scheduled = job(run_at=T0 + timedelta(days=1))
    long_history(scheduled, 600)
    page = admin_client.get(change_url(scheduled))
    # The form as the browser posts it, once the operator chose "in 2 days" and saved.
    data = form_as_posted(page.content.decode(), "scheduledjob_form")
    data.update(
        when=["in"], delay_amount=["2"], delay_unit=["days"], reason=["late"], _save=["Save"]
    )
    # Rows added meanwhile: the latest rows are no longer those the page posts.
    long_history(scheduled, 5)
    response = admin_client.post(change_url(scheduled), data)
    assert response.status_code == 302, response
    scheduled.refresh_from_db()
    assert (scheduled.status, scheduled.run_at) == (Status.SCHEDULED, T0 + timedelta(days=2))
    assert scheduled.audit_entries.filter(action=AuditEntry.Action.RESCHEDULE).count() == 1


def test_a_reschedule_from_a_page_loaded_before_another_operators_is_not_applied_unseen(
    admin_client,
):
    # A loads the page; Bob postpones the job a day; A's "in 30 minutes" overwrote it,
    # and the job ran early with no word to A.
    scheduled = job(run_at=T0 + timedelta(days=3))
    page = admin_client.get(change_url(scheduled))
    data = form_as_posted(page.content.decode(), "scheduledjob_form")
    data.update(when=["in"], delay_amount=["30"], delay_unit=["minutes"], _save=["Save"])
    services.reschedule(scheduled.pk, T0 + timedelta(days=4), actor="bob")
    response = admin_client.post(change_url(scheduled), data)
    assert response.status_code == 200
    assert "The job was changed since this page was loaded: it now runs at 2026-11-28" in (
        response.content.decode()
    )
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(days=4)
    # Submitted again from the page it was shown, it applies: A has seen Bob's time.
    again = form_as_posted(response.content.decode(), "scheduledjob_form")
    again.update(when=["in"], delay_amount=["30"], delay_unit=["minutes"], _save=["Save"])
    assert admin_client.post(change_url(scheduled), again).status_code == 302
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(minutes=30)


def test_a_refused_reschedule_shows_the_page_again_with_the_history_it_posted(admin_client):
    # Rows added between the page and the post: a posted row no longer among the latest
    # was built blank, and showing the page again with the form's error was a 500.
    scheduled = job(run_at=T0 + timedelta(days=1))
    long_history(scheduled, 60)
    data = form_as_posted(
        admin_client.get(change_url(scheduled)).content.decode(), "scheduledjob_form"
    )
    data.update(when=["in"], delay_amount=["soon"], delay_unit=["days"], _save=["Save"])
    long_history(scheduled, 5)
    response = admin_client.post(change_url(scheduled), data)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Enter a whole number." in content
    # The rows it posted, as they are: none made up.
    assert len(re.findall(r"<summary>RuntimeError: attempt \d+</summary>", content)) == 50
    assert len(re.findall(r"<p>retry \d+</p>", content)) == 50
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == T0 + timedelta(days=1)


def test_a_job_page_shows_the_latest_history_and_links_to_all_of_it(admin_client):
    scheduled = job(run_at=T0 + timedelta(days=1))
    long_history(scheduled, 120)
    short = job(run_at=T0 + timedelta(days=1))
    long_history(short, 50)
    content = admin_client.get(change_url(scheduled)).content.decode()
    # The latest 50 attempts and audit entries, oldest first (by start: each retry
    # numbers its attempts from 1 again).
    attempts = re.findall(r"<summary>RuntimeError: attempt (\d+)</summary>", content)
    assert [int(number) for number in attempts] == list(range(70, 120))
    reasons = re.findall(r"<p>retry (\d+)</p>", content)
    assert [int(number) for number in reasons] == list(range(70, 120))
    mine = f"?job__id__exact={scheduled.pk}"
    all_attempts = reverse("admin:scheduler_jobattempt_changelist") + mine
    all_entries = reverse("admin:scheduler_auditentry_changelist") + mine
    assert f'The latest 50 of 120 job attempts: <a href="{all_attempts}">see them all</a>.' in (
        content
    )
    assert f'The latest 50 of 120 audit entries: <a href="{all_entries}">see them all</a>.' in (
        content
    )
    for url in (all_attempts, all_entries):
        listed = admin_client.get(url)
        assert listed.status_code == 200
        assert listed.context["cl"].result_count == 120
    # A history the page shows whole needs no link.
    assert "see them all" not in admin_client.get(change_url(short)).content.decode()


def older_link(content):
    """The footer's link to the rows older than the page's, if it has one."""
    found = re.findall(r'<a href="([^"]+)">those older than this page</a>', content)
    return html.unescape(found[0]) if found else None


@pytest.mark.parametrize(
    ("history", "query"),
    [
        ("jobattempt", "job__id__exact={job}"),
        ("auditentry", "job__id__exact={job}"),
        ("auditentry", "action__exact=retry"),
        ("auditentry", ""),
    ],
)
def test_a_history_longer_than_its_list_counts_is_listed_to_its_oldest_row(
    admin_client, monkeypatch, history, query
):
    # The list paged through its newest 21 rows (COUNT_LIMIT 20) and no further: a page
    # past them went back to ?e=1, and nothing else listed the older ones, which the job
    # page's "see them all" and the README promised.
    monkeypatch.setattr(changelist, "COUNT_LIMIT", 20)
    for admin_class in (JobAttemptAdmin, AuditEntryAdmin):
        monkeypatch.setattr(admin_class, "list_per_page", 10)
    scheduled = job(run_at=T0 + timedelta(days=1))
    long_history(scheduled, 75)
    model = {"jobattempt": JobAttempt, "auditentry": AuditEntry}[history]
    newest_first = list(model.objects.order_by("-pk").values_list("pk", flat=True))
    url = f"{reverse(f'admin:scheduler_{history}_changelist')}?{query.format(job=scheduled.pk)}"
    path = url.split("?")[0]
    listed: list[int] = []
    while url:
        page = admin_client.get(url)
        assert page.status_code == 200, url
        listed += [row.pk for row in page.context["cl"].result_list]
        assert "Show counts" not in page.content.decode()  # uncapped counts
        older = older_link(page.content.decode())
        url = f"{path}{older}" if older else ""
    # Only a list that counts no more rows than its limit has no link: its pages list them.
    cl = page.context["cl"]
    assert not cl.paginator.is_capped
    for number in range(2, cl.paginator.num_pages + 1):
        later = admin_client.get(f"{path}{cl.get_query_string({PAGE_VAR: number})}")
        listed += [row.pk for row in later.context["cl"].result_list]
    assert listed == newest_first


@pytest.mark.parametrize(
    "inline_data",
    [
        {"history-TOTAL_FORMS": None, "history-INITIAL_FORMS": None},  # no management form
        {"audit_entries-TOTAL_FORMS": "x"},  # a tampered one
    ],
)
def test_an_invalid_inline_leaves_the_job_as_it_was(admin_client, inline_data):
    scheduled = job(run_at=T0 + timedelta(days=1))
    data = {
        key: value
        for key, value in {**reschedule_data(delay_amount="2"), **inline_data}.items()
        if value is not None
    }
    response = admin_client.post(change_url(scheduled), data)
    # The page shows the inline's error, and nothing was written behind it.
    assert response.status_code == 200
    assert any(
        formset.formset.non_form_errors() for formset in response.context["inline_admin_formsets"]
    )
    scheduled.refresh_from_db()
    assert scheduled.run_at == T0 + timedelta(days=1)
    assert not scheduled.audit_entries.exists()


def test_posting_to_a_job_that_ended_meanwhile_says_so_and_changes_nothing(admin_client):
    # The page was loaded while the job was scheduled; a worker ran it since. A 403 page
    # said the operator lacked a permission.
    scheduled = job(run_at=T0 + timedelta(days=1))
    admin_client.get(change_url(scheduled))
    ScheduledJob.objects.filter(pk=scheduled.pk).update(
        status=Status.SUCCEEDED, finished_at=T0, started_at=T0
    )
    response = admin_client.post(change_url(scheduled), reschedule_data(), follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        f"cannot reschedule job {scheduled.pk}: it is succeeded; "
        "only a job that is scheduled or enqueued can be"
    ]
    scheduled.refresh_from_db()
    assert (scheduled.status, scheduled.run_at) == (Status.SUCCEEDED, T0 + timedelta(days=1))
    assert not scheduled.audit_entries.exists()


def test_a_job_sent_to_sqs_since_its_page_was_loaded_is_rescheduled_all_the_same(admin_client):
    # Due in minutes, it is sent to SQS while the operator types: the dispatcher's
    # lookahead must not turn the operator's reschedule into a 403.
    scheduled = job(run_at=T0 + timedelta(minutes=4))
    admin_client.get(change_url(scheduled))
    ScheduledJob.objects.filter(pk=scheduled.pk).update(
        **job_fields(Status.ENQUEUED, run_at=scheduled.run_at)
    )
    response = admin_client.post(
        change_url(scheduled),
        reschedule_data(when="in", delay_amount="2", delay_unit="hours", reason="customer asked"),
        follow=True,
    )
    assert response.status_code == 200
    scheduled.refresh_from_db()
    assert (scheduled.status, scheduled.run_at, scheduled.dispatch_token) == (
        Status.SCHEDULED,
        T0 + timedelta(hours=2),
        None,
    )
    # The message and the admin's log say what the job is now, not what the page showed.
    [said] = messages_of(response)
    assert str(scheduled) in said
    assert LogEntry.objects.get().object_repr == str(scheduled)


def test_a_service_refusal_during_the_post_becomes_a_message(admin_client, monkeypatch):
    scheduled = job(run_at=T0 + timedelta(days=1))
    original = services.reschedule

    def claimed_first(job_or_id, run_at, **audit):
        ScheduledJob.objects.filter(pk=scheduled.pk).update(status=Status.CANCELLED, finished_at=T0)
        return original(job_or_id, run_at, **audit)

    monkeypatch.setattr(services, "reschedule", claimed_first)
    response = admin_client.post(
        change_url(scheduled),
        reschedule_data(),
        follow=True,
    )
    assert response.status_code == 200
    assert messages_of(response) == [
        f"cannot reschedule job {scheduled.pk}: it is cancelled; "
        "only a job that is scheduled or enqueued can be"
    ]
    scheduled.refresh_from_db()
    # The admin's transaction rolled back the concurrent change along with everything.
    assert scheduled.run_at == T0 + timedelta(days=1)


@pytest.mark.parametrize("status", [s for s in Status if s not in states.PENDING])
def test_a_job_that_started_or_ended_is_read_only(admin_client, status):
    other = job(status)
    page = admin_client.get(change_url(other))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert b'name="when"' not in page.content
    assert admin_client.post(change_url(other), reschedule_data(), follow=True).status_code == 200
    assert ScheduledJob.objects.get(pk=other.pk).status == status


def test_job_page_shows_the_start_of_arguments_too_long_to_show(admin_client):
    # Arguments may run to 256 MB: the page was as long, for a browser to choke on.
    long = job(Status.SCHEDULED, args=["x" * 1_000_000], kwargs={"k": 1})
    content = admin_client.get(change_url(long)).content.decode()
    assert len(content) < 300_000
    assert f'<pre class="job-json">[\n  &quot;{"x" * 100}' in content
    assert "… and 934,472 more characters</pre>" in content
    assert "&quot;k&quot;: 1" in content


def test_job_page_shows_pretty_arguments_and_every_attempt_with_its_traceback(admin_client):
    failed = job(
        Status.FAILED,
        args=[1, {"b": [2]}],
        kwargs={"payment_id": 42},
        attempts=2,
        last_error="RuntimeError: second",
    )
    for number, error in (
        (1, "Traceback (most recent call last):\nRuntimeError: first"),
        (2, "Traceback (most recent call last):\nRuntimeError: second " + "z" * 500),
    ):
        JobAttempt.objects.create(
            job=failed,
            number=number,
            dispatch_token=f"00000000-0000-0000-0000-00000000000{number}",
            scheduled_for=T0,
            started_at=T0 + timedelta(seconds=number),
            finished_at=T0 + timedelta(seconds=number + 1),
            outcome=JobAttempt.Outcome.ERROR,
            error=error,
            worker="w1",
        )
    content = admin_client.get(change_url(failed)).content.decode()
    assert (
        '<pre class="job-json">[\n  1,\n  {\n    &quot;b&quot;: [\n      2\n    ]\n  }\n]</pre>'
        in content
    )
    assert "&quot;payment_id&quot;: 42" in content
    assert content.count('<details class="job-traceback">') == 2
    assert "<summary>RuntimeError: first</summary>" in content
    # A long exception's line is cut in the summary, and whole in its traceback.
    assert f"<summary>RuntimeError: second {'z' * 59}…</summary>" in content
    assert f"<pre>Traceback (most recent call last):\nRuntimeError: second {'z' * 500}" in content
    assert "2.000 s" in content  # the second attempt's lateness
    assert 'class="job-status job-status-failed"' in content


@pytest.mark.parametrize("wall", ["2027-03-28T02:30", "2027-10-31T02:30"])
def test_a_time_is_read_in_the_chosen_zone_only_not_the_servers(admin_client, settings, wall):
    # 02:30 is skipped or repeated in Paris on those days, not in New York: a server in
    # Paris must not refuse it, nor name a zone the operator did not choose.
    settings.TIME_ZONE = "Europe/Paris"
    response = admin_client.post(ADD, form_data(run_at_local=wall, time_zone="America/New_York"))
    assert response.status_code == 302, errors_of(response)
    scheduled = ScheduledJob.objects.get()
    local = datetime.fromisoformat(wall).replace(tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    assert scheduled.run_at == local
