"""Fewer index tuples per job, and room for HOT updates (issue 9.8; bench/storage.py).

- Indexes that every status change rewrote become partial: (status, run_at) skips the
  two big statuses, scheduled (due_idx serves it) and succeeded; finished_at is indexed
  for finished jobs only, attempts' finished_at for failed attempts only. Two go: the
  running jobs' started_at index ((status, run_at) serves them) and the attempts'
  job_id index (the unique (job, dispatch_token) index leads with job_id).
- The active unique-key index skips jobs without a key.
- fillfactor 70 on the job table, so a heartbeat (and most status changes) finds room
  on the row's own page. It applies to pages written from now on; to repack an
  existing table, run pg_repack or VACUUM FULL in a quiet hour.

Indexes are built and dropped CONCURRENTLY (no write lock on a big table), so the
migration is not atomic. The unique index is swapped without a moment unenforced:
the new one is built beside the old one, then takes its name. Run again after an
interruption, the migration completes (``_concurrently``).
"""

import django.db.models.deletion
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models

from scheduler.migrations._concurrently import swap_index

ACTIVE_KEY = "scheduler_job_unique_active_key"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0002_next_wave"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                swap_index(
                    ACTIVE_KEY,
                    create="CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                    "ON scheduler_scheduledjob (unique_key) "
                    "WHERE status IN ('scheduled', 'enqueued', 'running') "
                    "AND unique_key IS NOT NULL",
                    create_back="CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                    "ON scheduler_scheduledjob (unique_key) "
                    "WHERE status IN ('scheduled', 'enqueued', 'running')",
                ),
            ],
            state_operations=[
                migrations.RemoveConstraint(model_name="scheduledjob", name=ACTIVE_KEY),
                migrations.AddConstraint(
                    model_name="scheduledjob",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(
                            ("status__in", ["scheduled", "enqueued", "running"]),
                            ("unique_key__isnull", False),
                        ),
                        fields=("unique_key",),
                        name=ACTIVE_KEY,
                    ),
                ),
            ],
        ),
        RemoveIndexConcurrently(model_name="scheduledjob", name="scheduler_job_status_idx"),
        AddIndexConcurrently(
            model_name="scheduledjob",
            index=models.Index(
                condition=models.Q(("status__in", ["scheduled", "succeeded"]), _negated=True),
                fields=["status", "run_at"],
                name="scheduler_job_status_idx",
            ),
        ),
        RemoveIndexConcurrently(model_name="scheduledjob", name="scheduler_job_running_idx"),
        RemoveIndexConcurrently(model_name="scheduledjob", name="scheduler_job_finished_idx"),
        AddIndexConcurrently(
            model_name="scheduledjob",
            index=models.Index(
                condition=models.Q(
                    ("status__in", ["succeeded", "failed", "cancelled", "expired"])
                ),
                fields=["finished_at"],
                name="scheduler_job_finished_idx",
            ),
        ),
        RemoveIndexConcurrently(model_name="jobattempt", name="scheduler_attempt_finished_idx"),
        AddIndexConcurrently(
            model_name="jobattempt",
            index=models.Index(
                condition=models.Q(("outcome__in", ["error", "lease_expired"])),
                fields=["finished_at"],
                name="scheduler_attempt_finished_idx",
            ),
        ),
        migrations.AlterField(
            model_name="jobattempt",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="history",
                to="scheduler.scheduledjob",
            ),
        ),
        migrations.RunSQL(
            sql="ALTER TABLE scheduler_scheduledjob SET (fillfactor = 70)",
            reverse_sql="ALTER TABLE scheduler_scheduledjob RESET (fillfactor)",
        ),
    ]
