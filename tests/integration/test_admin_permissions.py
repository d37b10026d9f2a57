"""Who may see and do what in the scheduler's admin."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from scheduler.models import ScheduledJob
from tests.integration.admin_helpers import (
    ADD,
    CHANGELIST,
    MONITORING,
    T0,
    Status,
    change_url,
    job,
    long_history,
    staff_client,
)

pytestmark = pytest.mark.django_db

ACTIONS = (
    "cancel_selected",
    "run_selected_now",
    "retry_selected",
    "retry_selected_with_deadline",
    "reschedule_selected",
)


@pytest.fixture
def viewer():
    return staff_client("viewer", "view_scheduledjob")


@pytest.fixture(autouse=True)
def allow_test_tasks(settings):
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.noop"]


def test_view_only_staff_sees_the_list_and_monitoring_without_any_action(viewer):
    job()
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200
    content = page.content.decode()
    assert 'name="action"' not in content
    assert ADD not in content
    assert MONITORING in content
    assert viewer.get(MONITORING).status_code == 200


def test_view_only_staff_sees_a_scheduled_job_read_only(viewer):
    scheduled = job(run_at=T0 + timedelta(days=1))
    content = viewer.get(change_url(scheduled)).content.decode()
    assert 'name="_save"' not in content
    assert 'name="when"' not in content


def test_view_only_staff_sees_all_of_a_jobs_attempts_but_not_the_audit_list(viewer):
    # A job's attempts are seen by whoever may view the job; the audit list, which has
    # every operator's actions, needs its own permission: the page says how many entries
    # there are, without the link.
    scheduled = job(run_at=T0 + timedelta(days=1))
    long_history(scheduled, 60)
    content = viewer.get(change_url(scheduled)).content.decode()
    mine = f"?job__id__exact={scheduled.pk}"
    attempts = reverse("admin:scheduler_jobattempt_changelist") + mine
    assert f'<a href="{attempts}">see them all</a>' in content
    assert "The latest 50 of 60 audit entries." in content
    assert viewer.get(attempts).context["cl"].result_count == 60
    assert viewer.get(reverse("admin:scheduler_auditentry_changelist") + mine).status_code == 403


@pytest.mark.parametrize("action", ACTIONS)
def test_view_only_staff_gets_403_posting_an_action(viewer, action):
    scheduled = job(run_at=T0 + timedelta(days=1))
    response = viewer.post(
        CHANGELIST,
        {"action": action, "index": "0", "_selected_action": [scheduled.pk], "apply": "1"},
    )
    assert response.status_code == 403
    assert ScheduledJob.objects.get(pk=scheduled.pk).status == Status.SCHEDULED


def test_view_only_staff_gets_403_adding_or_changing(viewer):
    scheduled = job(run_at=T0 + timedelta(days=1))
    assert viewer.get(ADD).status_code == 403
    assert viewer.post(ADD, {"task_name": "testapp.noop"}).status_code == 403
    assert viewer.post(change_url(scheduled), {"when": "in"}).status_code == 403


def test_change_permission_allows_actions_but_not_adding(settings):
    client = staff_client("operator", "view_scheduledjob", "change_scheduledjob")
    content = client.get(CHANGELIST).content.decode()
    for action in ACTIONS:
        assert f'value="{action}"' in content
    assert 'value="delete_selected"' not in content
    assert ADD not in content
    assert client.get(ADD).status_code == 403


def test_add_permission_allows_scheduling():
    client = staff_client("scheduler", "view_scheduledjob", "add_scheduledjob")
    assert client.get(ADD).status_code == 200
    content = client.get(CHANGELIST).content.decode()
    assert ADD in content
    assert 'name="action"' not in content


def test_staff_without_scheduler_permissions_is_refused_everywhere():
    client = staff_client("stranger")
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(MONITORING).status_code == 403


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(MONITORING)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_nobody_deletes_jobs(admin_client):
    scheduled = job()
    url = change_url(scheduled).replace("/change/", "/delete/")
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert ScheduledJob.objects.filter(pk=scheduled.pk).exists()


def test_actions_need_the_csrf_token(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    scheduled = job()
    response = client.post(
        CHANGELIST, {"action": "cancel_selected", "index": "0", "_selected_action": [scheduled.pk]}
    )
    assert response.status_code == 403
    assert ScheduledJob.objects.get(pk=scheduled.pk).status == Status.SCHEDULED


def test_monitoring_page_only_answers_get(admin_client):
    assert admin_client.post(MONITORING).status_code == 405
