"""The indexes the admin's pages read (issue 10), built CONCURRENTLY.

No write lock on a big job table, so the migration is not atomic. Each index is dropped
first if it is there: run again after an interruption (a deploy's time limit), the
migration builds again what PostgreSQL left behind INVALID. A database that built them
in 0007, as 0.2.0's development versions did, builds them once more.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

INDEXES = [
    models.Index(
        condition=models.Q(("status", "failed")),
        fields=["finished_at"],
        name="scheduler_job_failed_idx",
    ),
    models.Index(
        condition=models.Q(("queue", "scheduler-jobs"), _negated=True),
        fields=["queue", "run_at"],
        name="scheduler_job_queue_idx",
    ),
    models.Index(
        condition=models.Q(("unique_key__isnull", False)),
        fields=["unique_key"],
        name="scheduler_job_key_prefix_idx",
        opclasses=["varchar_pattern_ops"],
    ),
]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0009_longer_actor_names"),
    ]

    operations = [
        operation
        for index in INDEXES
        for operation in (
            migrations.RunSQL(
                f"DROP INDEX CONCURRENTLY IF EXISTS {index.name}", migrations.RunSQL.noop
            ),
            AddIndexConcurrently(model_name="scheduledjob", index=index),
        )
    ]
