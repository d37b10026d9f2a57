"""Actors as long as a custom user model's username may be (an email address: 254).

PostgreSQL widens a varchar without rewriting the table.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0008_database_defaults"),
    ]

    operations = [
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
    ]
