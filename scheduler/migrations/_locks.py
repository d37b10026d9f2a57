"""Changes to a busy table that wait briefly for its lock, then give up.

An ALTER TABLE, however quick, needs its table's ACCESS EXCLUSIVE lock. Behind a long
transaction (an atomic job running for minutes, an open psql session) it waits, and every
query on the table, reads too, queues behind it: an outage as long as that transaction.
With a lock timeout the migration fails instead ("canceling statement due to lock
timeout"), having changed nothing, and ``migrate`` is run again once the transaction has
ended. Index builds CONCURRENTLY take no such lock and are left to wait as long as they
must (``_concurrently``). Only forward: migrating back waits as long as it must.
"""

from django.db import migrations

#: How long a statement of these migrations waits for a lock.
LOCK_TIMEOUT = "5s"


def wait_briefly_for_locks():
    """First operation of an atomic migration: its statements wait ``LOCK_TIMEOUT`` at
    most for a lock (until the migration's transaction ends)."""
    return migrations.RunSQL(
        f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'", migrations.RunSQL.noop, elidable=True
    )


def add_constraint_briefly(table, name, definition):
    """For a migration that is not atomic: ``ALTER TABLE table ADD CONSTRAINT name
    definition`` in a transaction of its own that waits ``LOCK_TIMEOUT`` at most for the
    table's lock, and does nothing if the constraint is there (a run again)."""
    return migrations.RunSQL(
        sql=f"""
            DO $$ BEGIN
                PERFORM set_config('lock_timeout', '{LOCK_TIMEOUT}', true);
                IF NOT EXISTS (
                    SELECT 1 FROM pg_constraint
                    WHERE conname = '{name}' AND conrelid = '{table}'::regclass
                ) THEN
                    ALTER TABLE {table} ADD CONSTRAINT {name} {definition};
                END IF;
            END $$
        """,
        reverse_sql=f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}",
    )
