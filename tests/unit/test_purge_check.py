"""scheduler.W004: no model of the project keeps the purge of finished jobs from deleting."""

import pytest
from django.db import models
from django.test.utils import isolate_apps

from scheduler.checks import check_purge_not_blocked
from scheduler.models import JobAttempt, ScheduledJob


def test_the_projects_models_let_the_purge_delete():
    # The demo's Payment.capture_job is SET_NULL; the audit trail's link has no constraint.
    assert check_purge_not_blocked() == []


@pytest.mark.parametrize(
    ("on_delete", "db_constraint"),
    [(models.PROTECT, True), (models.RESTRICT, True), (models.DO_NOTHING, True)],
    ids=["protect", "restrict", "do-nothing"],
)
@pytest.mark.parametrize("target", [ScheduledJob, JobAttempt], ids=lambda model: model.__name__)
def test_a_foreign_key_that_keeps_a_job_from_being_deleted_is_warned(
    on_delete, db_constraint, target
):
    with isolate_apps("tests.testapp") as isolated:

        class Invoice(models.Model):
            job = models.ForeignKey(target, on_delete=on_delete, db_constraint=db_constraint)

            class Meta:
                app_label = "testapp"

        [warning] = check_purge_not_blocked(app_configs=isolated.get_app_configs())

    assert warning.id == "scheduler.W004"
    assert warning.obj is Invoice._meta.get_field("job")
    assert warning.msg.startswith(f"testapp.Invoice.job keeps the {target.__name__} ")
    assert f"(on_delete={on_delete.__name__})" in warning.msg


@pytest.mark.parametrize(
    ("on_delete", "db_constraint"),
    [(models.SET_NULL, True), (models.CASCADE, True), (models.DO_NOTHING, False)],
    ids=["set-null", "cascade", "do-nothing-without-constraint"],
)
def test_a_foreign_key_that_lets_the_job_go_is_not_warned(on_delete, db_constraint):
    with isolate_apps("tests.testapp") as isolated:

        class Invoice(models.Model):
            job = models.ForeignKey(
                ScheduledJob, on_delete=on_delete, db_constraint=db_constraint, null=True
            )

            class Meta:
                app_label = "testapp"

        assert check_purge_not_blocked(app_configs=isolated.get_app_configs()) == []


def test_a_foreign_key_to_a_proxy_of_a_job_is_warned():
    with isolate_apps("tests.testapp") as isolated:

        class Job(ScheduledJob):
            class Meta:
                app_label = "testapp"
                proxy = True

        class Invoice(models.Model):
            job = models.ForeignKey(Job, on_delete=models.PROTECT)

            class Meta:
                app_label = "testapp"

        [warning] = check_purge_not_blocked(app_configs=isolated.get_app_configs())

    assert warning.obj is Invoice._meta.get_field("job")


def test_a_foreign_key_that_keeps_a_row_deleted_with_a_job_is_warned():
    # The W004 hint's CASCADE, then another model protecting that row: the purge raised
    # ProtectedError at every run, the same job in every batch, and the check was silent.
    with isolate_apps("tests.testapp") as isolated:

        class Reminder(models.Model):
            job = models.ForeignKey(ScheduledJob, on_delete=models.CASCADE)

            class Meta:
                app_label = "testapp"

        class Letter(models.Model):
            reminder = models.ForeignKey(Reminder, on_delete=models.CASCADE)

            class Meta:
                app_label = "testapp"

        class Invoice(models.Model):
            letter = models.ForeignKey(Letter, on_delete=models.PROTECT)

            class Meta:
                app_label = "testapp"

        [warning] = check_purge_not_blocked(app_configs=isolated.get_app_configs())

    assert warning.id == "scheduler.W004"
    assert warning.obj is Invoice._meta.get_field("letter")
    assert warning.msg.startswith(
        "testapp.Invoice.letter keeps the testapp.Letter (the purge deletes it with the job "
    )
