"""The audit list's filter by action: an index on the action, newest entry first.

Built CONCURRENTLY (not atomic), so that operators' actions, which write entries, are
not held up; run again after an interruption, the migration completes.
"""

from django.db import migrations, models

from scheduler.migrations._concurrently import add_index


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0013_finished_and_running_checks"),
    ]

    operations = [
        add_index(
            "auditentry",
            models.Index(fields=["action", "id"], name="scheduler_audit_action_idx"),
        ),
    ]
