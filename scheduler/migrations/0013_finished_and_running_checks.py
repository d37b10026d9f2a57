"""Two invariants the code relies on, enforced by the database: a finished job has its
``finished_at`` (the retention purge deletes finished jobs by it), and a running job has
counted the attempt under way (``attempts >= 1``).

No code of this version writes a row that breaks them, nor did 0.1.0's (each of its
changes of status set ``finished_at`` on the way to an end and counted the attempt of a
claim; ``tests/integration/test_upgrade.py``), whose web servers and workers go on
writing during an upgrade. A row edited by hand may, though, so:

1. each check is added NOT VALID, waiting 5 s at most for the table's lock: every write
   is checked from then on, so no row breaking them appears after step 2 has passed it;
2. the rows already there that break them are given what they lack, a batch at a time
   (a few statements on the partial indexes of finished and of running jobs), each
   batch committed on its own;
3. the checks are validated, which reads the whole table while reads and writes go on.

Added first, the checks refuse any write that keeps a row of step 2 broken until that
row is mended: none of 0.1.0's does (its changes of such a row end it, with a
``finished_at``, or retry it), and only a heartbeat of this version's worker would
(a running job without an attempt), for the seconds step 2 takes. Mended first instead,
a row broken meanwhile would make the validation fail.

Not atomic: each statement commits on its own. Run again after an interruption, the
migration completes (a check already there is kept; mended rows are not read again;
validating a valid check does nothing).
"""

from django.db import migrations, models

from scheduler.migrations._locks import add_constraint_briefly

TABLE = "scheduler_scheduledjob"
FINISHED = "('succeeded', 'failed', 'cancelled', 'expired')"
#: Rows mended by one statement at most, so that the rows locked are few and the lock short.
BATCH = 10_000

#: (name, what the check requires, the change that gives a row what it lacks).
CHECKS = (
    (
        "scheduler_job_finished_has_end",
        f"NOT (status IN {FINISHED}) OR finished_at IS NOT NULL",
        # When it ended is not known: the latest of the times it has (its last change,
        # as a rule), never a planned one (run_at, deadline), which may be to come. The
        # purge deletes it once the retention period has passed since.
        "finished_at = GREATEST(updated_at, created_at, enqueued_at, started_at, heartbeat_at)",
    ),
    (
        "scheduler_job_running_has_attempt",
        "NOT (status = 'running') OR attempts >= 1",
        # Its attempt under way is its first (attempts <= max_attempts holds, as
        # max_attempts >= 1): the retries it is owed are max_attempts - 1 more.
        "attempts = 1",
    ),
)


def mend_broken_rows(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for _, requirement, change in CHECKS:
            broken = f"NOT ({requirement})"
            found = True
            while found:
                # A batch's ids as an array, looked up by the primary key (joined to the
                # subquery, every batch read every broken row again); the condition
                # again, so that a row another transaction changed meanwhile is read as
                # it is now: no longer broken, as the check refuses a write that keeps a
                # row broken. So each batch finds rows no batch found before, until none
                # is left.
                cursor.execute(
                    f"WITH batch AS (SELECT id FROM {TABLE} WHERE {broken} LIMIT %s), "
                    f"mended AS (UPDATE {TABLE} SET {change} "
                    f"WHERE id = ANY(ARRAY(SELECT id FROM batch)) AND {broken}) "
                    "SELECT EXISTS (SELECT FROM batch)",
                    [BATCH],
                )
                (found,) = cursor.fetchone()


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0012_online_builds"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                add_constraint_briefly(TABLE, name, f"CHECK ({requirement}) NOT VALID")
                for name, requirement, _ in CHECKS
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name="scheduledjob",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("status", "running"), _negated=True),
                            ("attempts__gte", 1),
                            _connector="OR",
                        ),
                        name="scheduler_job_running_has_attempt",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="scheduledjob",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("status__in", ["succeeded", "failed", "cancelled", "expired"]),
                                _negated=True,
                            ),
                            ("finished_at__isnull", False),
                            _connector="OR",
                        ),
                        name="scheduler_job_finished_has_end",
                    ),
                ),
            ],
        ),
        migrations.RunPython(mend_broken_rows, migrations.RunPython.noop),
        migrations.RunSQL(
            sql=[f"ALTER TABLE {TABLE} VALIDATE CONSTRAINT {name}" for name, _, _ in CHECKS],
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
