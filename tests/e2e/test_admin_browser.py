"""An operator in a real browser (Debian's Chromium, headless): schedule, find, cancel, watch;
schedule with a deadline and a reason, read the job's audit trail, pause and resume a task
from the monitoring page. Screenshots go to test-artifacts/."""

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from scheduler.admin import jobs
from scheduler.models import AuditEntry, JobAttempt, Pause, ScheduledJob
from scheduler.sqs import dead_letter_queue
from tests.factories import make_jobs

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    # Playwright's sync API runs an event loop in this thread; the test's own ORM
    # calls are still synchronous, between browser steps.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            timezone_id="Europe/Paris", viewport={"width": 1400, "height": 1000}
        )
        context.set_default_timeout(15_000)
        try:
            yield context.new_page()
        finally:
            # The ORM calls made while Playwright's loop ran opened a connection of
            # their own; close it so the test database can be dropped.
            connections.close_all()
            browser.close()


def test_operator_schedules_finds_cancels_and_monitors_a_job(
    page: Page, live_server, admin_user, settings
):
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.noop", "testapp.record"]
    ARTIFACTS.mkdir(exist_ok=True)

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()

    # Schedule a job through the form, "in 2 hours".
    page.goto(f"{live_server.url}/admin/scheduler/scheduledjob/add/")
    expect(page.locator("#id_time_zone")).to_have_value("Europe/Paris")  # the browser's zone
    page.select_option("#id_task_name", "testapp.noop")
    page.fill("#id_args_json", '["from the browser"]')
    page.fill("#id_key", "browser-test")
    page.check("input[name=when][value=in]")
    page.fill("#id_delay_amount", "2")
    page.select_option("#id_delay_unit", "hours")
    before = timezone.now()
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")

    job = ScheduledJob.objects.get(unique_key="browser-test")
    assert job.args == ["from the browser"]
    assert before + timedelta(hours=2) <= job.run_at <= timezone.now() + timedelta(hours=2)

    # Find it in the list by its unique key.
    page.fill("#searchbar", "browser-test")
    page.press("#searchbar", "Enter")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("testapp.noop")
    expect(rows.first.locator(".job-status")).to_have_text("Scheduled")

    # Cancel it with the action.
    rows.first.locator("input.action-select").check()
    page.select_option("select[name=action]", "cancel_selected")
    page.click("button[name=index]")
    # Asked first, as Django's own delete action asks.
    expect(page.locator("#content")).to_contain_text("Cancel 1 selected job.")
    job.refresh_from_db()
    assert job.status == ScheduledJob.Status.SCHEDULED
    page.click("input[name=apply]")
    expect(page.locator(".messagelist")).to_contain_text("Cancelled 1 job.")
    expect(page.locator("#result_list tbody tr .job-status")).to_have_text("Cancelled")
    page.screenshot(path=str(ARTIFACTS / "admin-job-list.png"), full_page=True)
    job.refresh_from_db()
    assert job.status == ScheduledJob.Status.CANCELLED

    # The monitoring page, linked from the list, counts it.
    page.click("text=Monitoring")
    expect(page.locator("h1")).to_have_text("Scheduler monitoring")
    expect(page.locator("#status-cancelled")).to_have_text("1")
    expect(page.locator("#overdue")).to_have_text("0")
    # Due per hour and per day, lateness over the last hour and day.
    assert page.locator("svg.monitoring-chart").count() == 4
    page.screenshot(path=str(ARTIFACTS / "admin-monitoring.png"), full_page=True)


def log_in(page: Page, url: str) -> None:
    page.goto(f"{url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()


def some_history() -> None:
    """Jobs due over the coming days, and attempts of the last hour, for the charts."""
    now = timezone.now()
    make_jobs([now + timedelta(hours=hours) for hours in range(1, 24 * 12, 3)])
    done = make_jobs([now - timedelta(minutes=30)], status="succeeded", finished_at=now)[0]
    lates = sorted(
        (late, task)
        for task, lates in (
            ("testapp.noop", range(20, 4000, 37)),
            ("testapp.record", range(5, 900, 11)),
        )
        for late in lates
    )
    # In the order they started, as the worker records them.
    JobAttempt.objects.bulk_create(
        JobAttempt(
            job=done,
            task_name=task,
            number=1,
            dispatch_token=uuid.uuid4(),
            scheduled_for=now - timedelta(minutes=30),
            started_at=now - timedelta(minutes=30) + timedelta(milliseconds=late),
            finished_at=now,
            outcome="succeeded",
        )
        for late, task in lates
    )


def test_operator_reads_the_audit_trail_and_pauses_from_monitoring(
    page, live_server, admin_user, settings, sqs_queue
):
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.noop"]
    sqs_queue.client.create_queue(QueueName=dead_letter_queue(sqs_queue.name))
    ARTIFACTS.mkdir(exist_ok=True)
    some_history()
    log_in(page, live_server.url)

    # Schedule with a deadline and a reason.
    page.goto(f"{live_server.url}/admin/scheduler/scheduledjob/add/")
    page.select_option("#id_task_name", "testapp.noop")
    page.fill("#id_key", "audit-browser")
    page.check("input[name=when][value=in]")
    page.fill("#id_delay_amount", "2")
    page.select_option("#id_delay_unit", "hours")
    deadline = timezone.localtime(timezone.now() + timedelta(days=1))
    page.select_option("#id_time_zone", "UTC")
    page.fill("#id_deadline_local", deadline.strftime("%Y-%m-%dT%H:%M:%S"))
    page.fill("#id_reason", "Customer asked for a later capture (ticket 4711)")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    job = ScheduledJob.objects.get(unique_key="audit-browser")
    assert job.deadline is not None

    # Reschedule it from its page, with a reason; the audit trail shows both actions.
    page.goto(f"{live_server.url}/admin/scheduler/scheduledjob/{job.pk}/change/")
    page.check("input[name=when][value=in]")
    page.fill("#id_delay_amount", "3")
    page.select_option("#id_delay_unit", "hours")
    page.fill("#id_reason", "Warehouse closed until the afternoon")
    page.click("input[name=_save]")
    page.goto(f"{live_server.url}/admin/scheduler/scheduledjob/{job.pk}/change/")
    trail = page.locator("#audit_entries-group")
    expect(trail).to_contain_text("Schedule")
    expect(trail).to_contain_text("Reschedule")
    expect(trail).to_contain_text("ticket 4711")
    expect(trail).to_contain_text("Warehouse closed")
    trail.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "admin-job-audit-trail.png"), full_page=True)
    assert [entry.action for entry in AuditEntry.objects.filter(job=job).order_by("pk")] == [
        "schedule",
        "reschedule",
    ]

    # Pause the task from the monitoring page, with a reason.
    page.goto(f"{live_server.url}/admin/scheduler/scheduledjob/monitoring/")
    expect(page.locator("#nothing-paused")).to_be_visible()
    page.select_option("#pause-form select[name=task]", "testapp.noop")
    page.fill("#pause-form input[name=reason]", "Payment gateway incident")
    page.click("#pause-form input[type=submit]")
    expect(page.locator(".messagelist .success")).to_contain_text("Paused task testapp.noop")
    expect(page.locator("#paused")).to_contain_text("Payment gateway incident")
    expect(page.locator("#paused-warning")).to_be_visible()
    expect(page.locator("#dead-letters .dlq-depth")).to_have_text("0")
    expect(page.locator("#lateness-last-hour")).to_contain_text("testapp.record")
    expect(page.locator("#lateness-last-hour")).to_contain_text("testapp.noop")
    page.screenshot(path=str(ARTIFACTS / "admin-monitoring-operations.png"), full_page=True)
    assert Pause.objects.get().paused_by == "admin"

    # Resume it.
    page.fill("#paused input[name=reason]", "Gateway back")
    page.click("#paused input[type=submit][value=Resume]")
    expect(page.locator(".messagelist .success")).to_contain_text("Resumed task testapp.noop")
    expect(page.locator("#nothing-paused")).to_be_visible()
    assert not Pause.objects.exists()


def test_the_monitoring_page_reloads_itself_but_not_while_a_pause_is_being_typed(
    page, live_server, admin_user, settings, monkeypatch
):
    # A reason typed into the pause form during an incident was thrown away by the
    # page's reload every 30 seconds.
    monkeypatch.setattr(jobs, "MONITORING_REFRESH_SECONDS", 1)
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.noop"]
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/scheduler/scheduledjob/monitoring/")
    page.evaluate("window.loadedOnce = true")
    page.wait_for_function("window.loadedOnce === undefined", timeout=5_000)  # reloaded

    page.evaluate("window.loadedOnce = true")
    page.select_option("#pause-form select[name=task]", "testapp.noop")
    page.fill("#pause-form input[name=reason]", "Payment gateway incident")
    page.locator("#pause-form input[name=reason]").blur()
    page.wait_for_timeout(3_000)  # three reload periods
    assert page.evaluate("window.loadedOnce") is True
    expect(page.locator("#pause-form input[name=reason]")).to_have_value("Payment gateway incident")
    page.click("#pause-form input[type=submit]")
    expect(page.locator(".messagelist .success")).to_contain_text("Paused task testapp.noop")
    assert Pause.objects.get().reason == "Payment gateway incident"
