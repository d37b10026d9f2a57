"""The index builds and checks of 0002, 0004 and 0006 that read the whole job table.

Done there, in their transactions, each read every job while holding a lock that
stopped 0.1.0's web servers and workers, still running during the upgrade, from
writing (an index) or even reading (a check): minutes on a big table. Here the indexes
are built CONCURRENTLY, and the check constraints, which those migrations added NOT
VALID (every write checked from then on), are validated while reads and writes go on.
Not atomic: each statement commits on its own. Run again after an interruption, the
migration completes (``_concurrently``; validating a valid constraint does nothing).
"""

from django.db import migrations, models

from scheduler.migrations._concurrently import add_index

CHECKS = (
    "scheduler_job_status_valid",
    "scheduler_scheduledjob_sends_check",
    "scheduler_job_enqueued_has_resend",
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0011_audit_actor_index"),
    ]

    operations = [
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(
                    ("deadline__isnull", False), ("status__in", ["scheduled", "enqueued"])
                ),
                fields=["deadline"],
                name="scheduler_job_deadline_idx",
            ),
        ),
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("status", "enqueued")),
                fields=["resend_at"],
                name="scheduler_job_resend_idx",
            ),
        ),
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("celery_task_id__isnull", False)),
                fields=["celery_task_id"],
                name="scheduler_job_celery_id_idx",
            ),
        ),
        migrations.RunSQL(
            sql=[f"ALTER TABLE scheduler_scheduledjob VALIDATE CONSTRAINT {name}" for name in CHECKS],
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
