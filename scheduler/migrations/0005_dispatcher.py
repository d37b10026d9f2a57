"""The dispatcher's next wave.

Every enqueued job has a time to be re-sent (bounded re-sends with the same token): jobs
enqueued before this migration get one, STALE_AFTER after they were due or were sent,
whichever is later, and a constraint keeps it so. The due index orders by (run_at, id),
the order of the dispatcher's claim, so that no other index can serve it.
"""

from django.db import migrations, models


def give_enqueued_jobs_a_resend_time(apps, schema_editor):
    from scheduler.conf import scheduler_settings

    ScheduledJob = apps.get_model("scheduler", "ScheduledJob")
    stale_after = scheduler_settings.STALE_AFTER_SECONDS
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {schema_editor.quote_name(ScheduledJob._meta.db_table)} "
            "SET resend_at = GREATEST(run_at, COALESCE(enqueued_at, run_at)) "
            "+ make_interval(secs => %s), sends = GREATEST(sends, 1) "
            "WHERE status = 'enqueued' AND resend_at IS NULL",
            [stale_after],
        )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0002_next_wave"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="scheduledjob", name="scheduler_job_due_idx"),
        migrations.AddIndex(
            model_name="scheduledjob",
            index=models.Index(
                condition=models.Q(("status", "scheduled")),
                fields=["run_at", "id"],
                name="scheduler_job_due_idx",
            ),
        ),
        migrations.RunPython(give_enqueued_jobs_a_resend_time, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="scheduledjob",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "enqueued"), _negated=True),
                    ("resend_at__isnull", False),
                    _connector="OR",
                ),
                name="scheduler_job_enqueued_has_resend",
            ),
        ),
    ]
