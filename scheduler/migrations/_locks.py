"""Changes to a busy table that wait briefly for its lock, then give up.

An ALTER TABLE, however quick, needs its table's ACCESS EXCLUSIVE lock. Behind a long
transaction (an atomic job running for minutes, an open psql session) it waits, and every
query on the table, reads too, queues behind it: an outage as long as that transaction.
With a lock timeout the migration fails instead ("canceling statement due to lock
timeout"), having changed nothing, and ``migrate`` is run again once the transaction has
ended. Both ways: migrating back runs a migration's operations in reverse order, so the
lock timeout is set at both ends of an atomic migration's operations, and a constraint a
migration that is not atomic adds is dropped with the same timeout. Index builds and
drops CONCURRENTLY take no such lock and are left to wait as long as they must
(``_concurrently``).
"""

from django.db import migrations

#: How long a statement of these migrations waits for a lock.
LOCK_TIMEOUT = "5s"

_SET_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"


def wait_briefly_for_locks(operations):
    """The operations of an atomic migration, whose statements wait ``LOCK_TIMEOUT`` at
    most for a lock (until the migration's transaction ends), applied or unapplied: the
    lock timeout is set first either way."""
    return [
        migrations.RunSQL(_SET_LOCK_TIMEOUT, migrations.RunSQL.noop, elidable=True),
        *operations,
        migrations.RunSQL(migrations.RunSQL.noop, _SET_LOCK_TIMEOUT, elidable=True),
    ]


def _briefly(statements):
    """``statements`` (PL/pgSQL) as one statement, a transaction of its own outside a
    migration's, which waits ``LOCK_TIMEOUT`` at most for a lock."""
    return f"""
        DO $$ BEGIN
            PERFORM set_config('lock_timeout', '{LOCK_TIMEOUT}', true);
            {statements}
        END $$
    """


def add_constraint_briefly(table, name, definition):
    """For a migration that is not atomic: ``ALTER TABLE table ADD CONSTRAINT name
    definition`` in a transaction of its own that waits ``LOCK_TIMEOUT`` at most for the
    table's lock, and does nothing if the constraint is there (a run again). Migrated
    back, the constraint is dropped, waiting as briefly."""
    return migrations.RunSQL(
        sql=_briefly(
            f"""IF NOT EXISTS (
                SELECT 1 FROM pg_constraint
                WHERE conname = '{name}' AND conrelid = '{table}'::regclass
            ) THEN
                ALTER TABLE {table} ADD CONSTRAINT {name} {definition};
            END IF;"""
        ),
        reverse_sql=_briefly(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name};"),
    )


def add_column_briefly(table, column, definition):
    """For a migration that is not atomic: ``ALTER TABLE table ADD COLUMN column
    definition`` in a transaction of its own that waits ``LOCK_TIMEOUT`` at most for the
    table's lock, and does nothing if the column is there (a run again). With a constant
    default, PostgreSQL (11+) writes no row: the lock is held for an instant. Migrated
    back, the column is dropped, waiting as briefly."""
    return migrations.RunSQL(
        sql=_briefly(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition};"),
        reverse_sql=_briefly(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {column};"),
    )
