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
migration is not atomic. Each index is swapped, so the table is never without it (nor
the unique key a moment unenforced): the new one is built beside the old one, then
takes its name. Run again after an
interruption, the migration completes (``_concurrently``).
"""

import django.db.models.deletion
from django.db import migrations, models

from scheduler.migrations._concurrently import remove_index, swap_index

ACTIVE_KEY = "scheduler_job_unique_active_key"
#: The index Django gave the attempts' foreign key to their job in 0001.
ATTEMPT_JOB_INDEX = "scheduler_jobattempt_job_id_e27ca809"


def _made_partial(model_name, index, *, table, columns, condition):
    """0001's index ``index.name`` on ``columns`` replaced by ``index``, partial on
    ``condition``: built beside it, so the table is never without one."""
    create = f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {{name}} ON {table} {columns}"
    return migrations.SeparateDatabaseAndState(
        database_operations=[
            swap_index(index.name, create=f"{create} WHERE {condition}", create_back=create)
        ],
        state_operations=[
            migrations.RemoveIndex(model_name=model_name, name=index.name),
            migrations.AddIndex(model_name=model_name, index=index),
        ],
    )


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
        _made_partial(
            "scheduledjob",
            models.Index(
                condition=models.Q(("status__in", ["scheduled", "succeeded"]), _negated=True),
                fields=["status", "run_at"],
                name="scheduler_job_status_idx",
            ),
            table="scheduler_scheduledjob",
            columns="(status, run_at)",
            condition="NOT (status IN ('scheduled', 'succeeded'))",
        ),
        remove_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("status", "running")),
                fields=["started_at"],
                name="scheduler_job_running_idx",
            ),
        ),
        _made_partial(
            "scheduledjob",
            models.Index(
                condition=models.Q(
                    ("status__in", ["succeeded", "failed", "cancelled", "expired"])
                ),
                fields=["finished_at"],
                name="scheduler_job_finished_idx",
            ),
            table="scheduler_scheduledjob",
            columns="(finished_at)",
            condition="status IN ('succeeded', 'failed', 'cancelled', 'expired')",
        ),
        _made_partial(
            "jobattempt",
            models.Index(
                condition=models.Q(("outcome__in", ["error", "lease_expired"])),
                fields=["finished_at"],
                name="scheduler_attempt_finished_idx",
            ),
            table="scheduler_jobattempt",
            columns="(finished_at)",
            condition="outcome IN ('error', 'lease_expired')",
        ),
        # Only the index goes. Django's own AlterField drops the foreign key too and adds
        # it again, checking every attempt with both tables' writes locked; and a run
        # cut short there left no foreign key, which a run again never put back.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{ATTEMPT_JOB_INDEX}"',
                    reverse_sql=f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{ATTEMPT_JOB_INDEX}" '
                    'ON "scheduler_jobattempt" ("job_id")',
                ),
            ],
            state_operations=[
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
            ],
        ),
        migrations.RunSQL(
            sql="ALTER TABLE scheduler_scheduledjob SET (fillfactor = 70)",
            reverse_sql="ALTER TABLE scheduler_scheduledjob RESET (fillfactor)",
        ),
    ]
