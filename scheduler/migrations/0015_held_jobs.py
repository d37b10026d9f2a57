"""Due jobs of a paused kind leave the due index: a long pause no longer slows every tick.

While a kind was paused its due jobs stayed scheduled, with the oldest run_at, at the
head of the due index: every tick's probe and every claim stepped over each of them
(an empty tick took 1.4 s with a million held jobs). Now the dispatcher's recovery
marks them ``held``, which takes them out of the due index (partial on ``status =
'scheduled' AND NOT held``) and puts them in a small index of held jobs, from which
recovery releases them once no pause covers them.

1. ``held`` is added with a database default (0.1.0's INSERTs, still running during the
   upgrade, name only its columns), waiting 5 s at most for the table's lock; with a
   constant default no row is written.
2. The due index is swapped for the partial one: built CONCURRENTLY beside the old one,
   which is then dropped CONCURRENTLY, and the new one takes its name, so the
   dispatcher is never without one.
3. The index of held jobs is built CONCURRENTLY (empty until something is held).

Not atomic: each statement commits on its own. Run again after an interruption, the
migration completes (``_concurrently``; the column is added only if missing). Migrated
back, the held index goes, the due index is swapped back, and the column is dropped.
"""

from django.db import migrations, models

from scheduler.migrations._concurrently import add_index, swap_index
from scheduler.migrations._locks import add_column_briefly

TABLE = "scheduler_scheduledjob"
DUE = "scheduler_job_due_idx"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0014_audit_action_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                add_column_briefly(TABLE, "held", "boolean DEFAULT false NOT NULL")
            ],
            state_operations=[
                migrations.AddField(
                    model_name="scheduledjob",
                    name="held",
                    field=models.BooleanField(db_default=False, default=False, editable=False),
                ),
            ],
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                swap_index(
                    DUE,
                    create="CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                    f"ON {TABLE} (run_at, id) WHERE status = 'scheduled' AND NOT held",
                    create_back="CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                    f"ON {TABLE} (run_at, id) WHERE status = 'scheduled'",
                ),
            ],
            state_operations=[
                migrations.RemoveIndex(model_name="scheduledjob", name=DUE),
                migrations.AddIndex(
                    model_name="scheduledjob",
                    index=models.Index(
                        condition=models.Q(("held", False), ("status", "scheduled")),
                        fields=["run_at", "id"],
                        name=DUE,
                    ),
                ),
            ],
        ),
        add_index(
            "scheduledjob",
            models.Index(
                condition=models.Q(("held", True)),
                fields=["task_name", "queue", "run_at", "id"],
                name="scheduler_job_held_idx",
            ),
        ),
    ]
