"""Helpers shared by the admin tests: jobs in any state, and staff users."""

import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from scheduler import states
from scheduler.models import AuditEntry, JobAttempt, ScheduledJob

Status = ScheduledJob.Status
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

CHANGELIST = reverse("admin:scheduler_scheduledjob_changelist")
ADD = reverse("admin:scheduler_scheduledjob_add")
MONITORING = reverse("admin:scheduler_scheduledjob_monitoring")


def change_url(job: ScheduledJob) -> str:
    return reverse("admin:scheduler_scheduledjob_change", args=[job.pk])


def job(status: str = Status.SCHEDULED, *, run_at: datetime = T0, **fields: Any) -> ScheduledJob:
    """A job row in ``status``, with whatever that status requires set."""
    return ScheduledJob.objects.create(**job_fields(status, run_at=run_at, **fields))


def job_fields(status: str, *, run_at: datetime, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "task_name": "testapp.noop",
        "queue": "scheduler-jobs",
        "run_at": run_at,
        "status": status,
        "max_attempts": 3,
    }
    if status in (Status.ENQUEUED, Status.RUNNING):
        values["dispatch_token"] = uuid.uuid4()
        values["enqueued_at"] = run_at - timedelta(minutes=5)
    if status == Status.ENQUEUED:
        values["resend_at"] = run_at + timedelta(minutes=5)
    if status in (Status.RUNNING, Status.SUCCEEDED, Status.FAILED):
        values["started_at"] = run_at + timedelta(seconds=1)
        values["attempts"] = 1
    if status in states.FINISHED:
        values["finished_at"] = run_at + timedelta(seconds=2)
    values.update(fields)
    return values


def long_history(of: ScheduledJob, rows: int) -> None:
    """``rows`` attempts and as many audit entries, an hour apart, the last an hour ago."""
    JobAttempt.objects.bulk_create(
        JobAttempt(
            job=of,
            # Each retry starts a fresh set of attempts, numbered from 1 again.
            number=i % 3 + 1,
            dispatch_token=uuid.uuid4(),
            scheduled_for=T0 - timedelta(hours=rows - i),
            started_at=T0 - timedelta(hours=rows - i),
            finished_at=T0 - timedelta(hours=rows - i, seconds=-1),
            outcome=JobAttempt.Outcome.ERROR,
            error=f"Traceback (most recent call last):\nRuntimeError: attempt {i}",
            worker="w1",
        )
        for i in range(rows)
    )
    AuditEntry.objects.bulk_create(
        AuditEntry(
            action=AuditEntry.Action.RETRY,
            actor="ops",
            reason=f"retry {i}",
            job=of,
            at=T0 - timedelta(hours=rows - i),
        )
        for i in range(rows)
    )


def staff_client(username: str, *codenames: str) -> Client:
    """A logged-in client for a staff user holding the scheduler permissions named."""
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="scheduler", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


ASKED_FIRST = "admin/scheduler/scheduledjob/asked_first.html"


def confirmed(
    client: Client, action: str, jobs: Any, *, url: str = CHANGELIST, **posted: Any
) -> Any:
    """``action`` on ``jobs`` as an operator takes it: chosen in the list at ``url`` (with
    the ``posted`` fields: the reason, "select all"…), then confirmed on its intermediate
    page. The list after it."""
    answer = confirmation(client, action, jobs, url=url, **posted)
    return client.post(url, answer, follow=True)


def confirmation(
    client: Client, action: str, jobs: Any, *, url: str = CHANGELIST, **posted: Any
) -> dict[str, list[str]]:
    """What confirming ``action`` on ``jobs`` posts: its intermediate page's form, left as
    it was rendered, with its button."""
    chosen = {"action": action, "index": "0", "_selected_action": [j.pk for j in jobs], **posted}
    page = client.post(url, chosen)
    assert page.status_code == 200
    assert page.templates[0].name == ASKED_FIRST
    return {**form_as_posted(page.content.decode(), "asked-first"), "apply": ["Yes"]}


def form_as_posted(html: str, form_id: str) -> dict[str, list[str]]:
    """What a browser posts from the form ``form_id`` of a page, left as it was rendered:
    every named input, checked box, selected option and text area (no submit button)."""
    parser = _FormParser(form_id)
    parser.feed(html)
    parser.close()
    assert parser.found, f"no form {form_id!r} on the page"
    return parser.data


class _FormParser(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.found = self.inside = False
        self.data: dict[str, list[str]] = {}
        self.select: str | None = None
        self.options: list[tuple[str, bool]] = []
        self.textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {key: value or "" for key, value in attrs}
        if tag == "form" and attr.get("id") == self.form_id:
            self.found = self.inside = True
        if not self.inside or "disabled" in attr:
            return
        name = attr.get("name")
        if tag == "input" and name:
            kind = attr.get("type", "text")
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in attr:
                return
            self.data.setdefault(name, []).append(
                attr.get("value", "on" if kind == "checkbox" else "")
            )
        elif tag == "select" and name:
            self.select, self.options = name, []
        elif tag == "option" and self.select is not None:
            self.options.append((attr.get("value", ""), "selected" in attr))
        elif tag == "textarea" and name:
            self.textarea = name
            self.data.setdefault(name, []).append("")

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.data[self.textarea][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self.textarea is not None:
            # As in a browser, the line break that follows <textarea> is not content.
            value = self.data[self.textarea][-1]
            self.data[self.textarea][-1] = value.removeprefix("\n")
            self.textarea = None
        elif tag == "select" and self.select is not None:
            chosen = [value for value, selected in self.options if selected] or [
                value for value, _ in self.options[:1]
            ]
            self.data.setdefault(self.select, []).extend(chosen)
            self.select = None
