"""The audit list's search by who acted: an index on the actor, case-insensitive.

Built CONCURRENTLY (not atomic), so that operators' actions, which write entries, are
not held up; run again after an interruption, the migration completes.
"""

import django.db.models.functions.text
from django.db import migrations, models

from scheduler.migrations._concurrently import add_index


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0010_operations_backfill"),
    ]

    operations = [
        add_index(
            "auditentry",
            models.Index(
                django.db.models.functions.text.Upper("actor"),
                models.F("id"),
                name="scheduler_audit_actor_idx",
            ),
        ),
    ]
