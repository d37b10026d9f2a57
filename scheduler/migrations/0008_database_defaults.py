"""Database defaults for the columns 0.2.0 adds to tables 0.1.0 writes.

0.1.0's code, still running while an upgrade migrates (web servers scheduling jobs,
workers recording attempts), inserts rows without these NOT NULL columns: without a
default in the database each such insert fails. Migrations 0002-0007 now add the
columns with their defaults; this one sets the defaults on a database that applied
those migrations before they did (setting one again changes nothing, and rewrites no
rows).
"""

from django.db import migrations

from scheduler.migrations._locks import wait_briefly_for_locks

DEFAULTS = {
    "scheduler_scheduledjob": {"sends": "0", "retry_on_error": "true"},
    "scheduler_jobattempt": {"task_name": "''"},
    "scheduler_dispatcherheartbeat": {"sent_total": "0", "errors_total": "0"},
}


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0007_operations"),
    ]

    operations = wait_briefly_for_locks([
        migrations.RunSQL(
            [
                f"ALTER TABLE {table} "
                + ", ".join(
                    f"ALTER COLUMN {column} SET DEFAULT {value}"
                    for column, value in columns.items()
                )
                for table, columns in DEFAULTS.items()
            ],
            migrations.RunSQL.noop,
        ),
    ])
