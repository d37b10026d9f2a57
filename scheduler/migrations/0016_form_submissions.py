"""The admin's one-time forms (scheduling a job, moving jobs by an offset) remember their
submissions, so a double click acts once: a new table, which no running code reads, so
nothing waits for a lock on another."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scheduler', '0015_held_jobs'),
    ]

    operations = [
        migrations.CreateModel(
            name='FormSubmission',
            fields=[
                ('token', models.UUIDField(primary_key=True, serialize=False)),
                ('submitted_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
    ]
