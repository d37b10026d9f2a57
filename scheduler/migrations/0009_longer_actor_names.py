"""Actors as long as a custom user model's username may be (an email address: 254).

PostgreSQL widens a varchar without rewriting the table. Migrated back, a longer name is
cut to the 150 characters it had room for, rather than stopping the migration.
"""

from django.db import migrations, models

from scheduler.migrations._locks import wait_briefly_for_locks


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0008_database_defaults"),
    ]

    operations = wait_briefly_for_locks([
        migrations.AlterField(
            model_name="auditentry",
            name="actor",
            field=models.CharField(max_length=255),
        ),
        migrations.AlterField(
            model_name="pause",
            name="paused_by",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        # Last here, so first when migrating back, before the columns narrow again.
        migrations.RunSQL(
            sql=migrations.RunSQL.noop,
            reverse_sql=[
                "UPDATE scheduler_auditentry SET actor = left(actor, 150) "
                "WHERE length(actor) > 150",
                "UPDATE scheduler_pause SET paused_by = left(paused_by, 150) "
                "WHERE length(paused_by) > 150",
            ],
        ),
    ])
