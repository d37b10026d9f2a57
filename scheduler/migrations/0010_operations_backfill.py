"""Operators' controls (issue 10), the slow part: earlier attempts' task names, and the
indexes the admin's pages read.

Not atomic, so that neither holds a lock on a big table for long: the attempts are
filled in by statements of their own, and the indexes are built CONCURRENTLY. Run again
after an interruption (a deploy's time limit), the migration completes
(``_concurrently``).
"""

from django.db import migrations, models

from scheduler.migrations._concurrently import add_index

#: Attempts recorded before 0007 gave them their own copy of the task name, this many
#: at a time, so that 0.1.0's workers, still running, wait at most a moment for a row.
BATCH = 10_000
FILL_TASK_NAMES = """
UPDATE scheduler_jobattempt AS attempt SET task_name = job.task_name
FROM scheduler_scheduledjob AS job
WHERE attempt.id >= %s AND attempt.id < %s AND attempt.task_name = ''
AND job.id = attempt.job_id
"""


def fill_task_names(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM scheduler_jobattempt")
        (last,) = cursor.fetchone()
        for start in range(0, (last or 0) + 1, BATCH):
            cursor.execute(FILL_TASK_NAMES, [start, start + BATCH])


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0009_longer_actor_names"),
    ]

    operations = [
        migrations.RunPython(fill_task_names, migrations.RunPython.noop),
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("status", "failed")),
                fields=["finished_at"],
                name="scheduler_job_failed_idx",
            ),
        ),
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("queue", "scheduler-jobs"), _negated=True),
                fields=["queue", "run_at"],
                name="scheduler_job_queue_idx",
            ),
        ),
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("unique_key__isnull", False)),
                fields=["unique_key"],
                name="scheduler_job_key_prefix_idx",
                opclasses=["varchar_pattern_ops"],
            ),
        ),
    ]
