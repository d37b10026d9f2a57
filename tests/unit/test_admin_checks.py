import pytest
from django.test import override_settings

from scheduler.checks import check_admin_tasks
from scheduler.conf import scheduler_settings


def ids(**overrides):
    with override_settings(**overrides):
        return [error.id for error in check_admin_tasks()]


def test_no_allow_list_means_no_task_and_passes(settings):
    del settings.SCHEDULER_ADMIN_TASKS
    assert scheduler_settings.ADMIN_TASKS == ()
    assert check_admin_tasks() == []


def test_registered_task_names_pass():
    assert ids(SCHEDULER_ADMIN_TASKS=["testapp.noop", "payments.capture_payment"]) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("testapp.noop", ["scheduler.E010"]),
        (["testapp.noop", 3], ["scheduler.E010"]),
        (["testapp.nope", "testapp.noop", "scheduler.dispatch"], ["scheduler.E011"] * 2),
    ],
)
def test_bad_allow_lists_are_reported(value, expected):
    assert ids(SCHEDULER_ADMIN_TASKS=value) == expected
