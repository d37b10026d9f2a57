"""The finished jobs' index is split in two: succeeded jobs, and those that ended badly.

Every other status has an index that answers ``status = …``; succeeded jobs, the bulk
of the table, were only in the index of every finished job on ``finished_at``. Counting
them up to the cap (the monitoring page, every /metrics scrape), PostgreSQL walked that
index and read every other finished job from the table to check its status: 352 ms at
two million cancelled jobs, past the scrape's 5 s timeout at twenty million. Now
succeeded jobs have an index of their own on ``finished_at``, and failed, cancelled and
expired jobs another: still one tuple per job, written at its end, each entry as small
as before (on ``(status, finished_at)`` the index nearly doubled in bytes). The count
reads the succeeded jobs' entries alone; the purge reads each index by when the jobs
finished.

Both new indexes are built CONCURRENTLY beside the old one, which is then dropped
CONCURRENTLY, so the purge is never without one. Not atomic: each statement commits on
its own. Run again after an interruption, the migration completes (``_concurrently``).
Migrated back, the index of every finished job is built again CONCURRENTLY before the
two are dropped.
"""

from django.db import migrations, models

from scheduler.migrations._concurrently import add_index, remove_index


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0016_form_submissions"),
    ]

    operations = [
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("status", "succeeded")),
                fields=["finished_at"],
                name="scheduler_job_succeeded_idx",
            ),
        ),
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("status__in", ["failed", "cancelled", "expired"])),
                fields=["finished_at"],
                name="scheduler_job_ended_badly_idx",
            ),
        ),
        remove_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(
                    ("status__in", ["succeeded", "failed", "cancelled", "expired"])
                ),
                fields=["finished_at"],
                name="scheduler_job_finished_idx",
            ),
        ),
    ]
