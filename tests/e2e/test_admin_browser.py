"""An operator in a real browser (Debian's Chromium, headless): schedule, find, cancel, watch."""

from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import Page, expect

from scheduler.models import ScheduledJob
from tests.e2e.conftest import ARTIFACTS


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
