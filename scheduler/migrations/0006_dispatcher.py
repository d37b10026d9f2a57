"""The dispatcher's next wave (bounded re-sends, the claim's own index).

- Every enqueued job has a time to be re-sent with the same token: jobs enqueued before
  this migration get one, STALE_AFTER after they were due or were sent, whichever is
  later, and a check constraint keeps it so.
- The due index orders by (run_at, id), the order of the dispatcher's claim, so that no
  other index can serve it. Built CONCURRENTLY beside the old one, which it then
  replaces, so the dispatcher is never without it and writes are never blocked: the
  migration is not atomic. Run again after an interruption, it completes
  (``_concurrently``).
"""

from django.db import migrations, models

from scheduler.migrations._concurrently import swap_index
from scheduler.migrations._locks import add_constraint_briefly

DUE = "scheduler_job_due_idx"


def give_enqueued_jobs_a_resend_time(apps, schema_editor):
    from scheduler.conf import scheduler_settings

    ScheduledJob = apps.get_model("scheduler", "ScheduledJob")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {schema_editor.quote_name(ScheduledJob._meta.db_table)} "
            "SET resend_at = GREATEST(run_at, COALESCE(enqueued_at, run_at)) "
            "+ make_interval(secs => %s), sends = GREATEST(sends, 1) "
            "WHERE status = 'enqueued' AND resend_at IS NULL",
            [scheduler_settings.STALE_AFTER_SECONDS],
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0005_dispatcher_totals"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                swap_index(
                    DUE,
                    create="CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                    "ON scheduler_scheduledjob (run_at, id) WHERE status = 'scheduled'",
                    create_back="CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                    "ON scheduler_scheduledjob (run_at) WHERE status = 'scheduled'",
                ),
            ],
            state_operations=[
                migrations.RemoveIndex(model_name="scheduledjob", name=DUE),
                migrations.AddIndex(
                    model_name="scheduledjob",
                    index=models.Index(
                        condition=models.Q(("status", "scheduled")),
                        fields=["run_at", "id"],
                        name=DUE,
                    ),
                ),
            ],
        ),
        migrations.RunPython(give_enqueued_jobs_a_resend_time, migrations.RunPython.noop),
        # NOT VALID: new writes are checked at once; 0012 validates the rows already
        # there without locking the table.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                add_constraint_briefly(
                    "scheduler_scheduledjob",
                    "scheduler_job_enqueued_has_resend",
                    "CHECK ((NOT (status = 'enqueued') OR resend_at IS NOT NULL)) NOT VALID",
                ),
            ],
            state_operations=[
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
            ],
        ),
    ]
