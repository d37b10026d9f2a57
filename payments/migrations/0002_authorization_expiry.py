from django.db import migrations, models



class Migration(migrations.Migration):

    dependencies = [
        ("payments", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="authorization_expires_at",
            field=models.DateTimeField(null=True),
        ),
        # Payments authorized before expiry was modelled get the demo's extended 30 days.
        migrations.RunSQL(
            "UPDATE payments_payment "
            "SET authorization_expires_at = authorized_at + interval '30 days'",
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="payment",
            name="authorization_expires_at",
            field=models.DateTimeField(),
        ),
        migrations.RemoveConstraint(
            model_name="payment",
            name="payments_status_valid",
        ),
        # Migrating back: 0.1.0 knows no missed capture. Such a payment is left authorized,
        # as 0.1.0 left one whose capture job failed (an expired job becomes failed).
        migrations.RunSQL(
            migrations.RunSQL.noop,
            "UPDATE payments_payment SET status = 'authorized' WHERE status = 'capture_missed'",
        ),
        migrations.AlterField(
            model_name="payment",
            name="status",
            field=models.CharField(
                choices=[
                    ("authorized", "Authorized"),
                    ("captured", "Captured"),
                    ("capture_missed", "Capture missed"),
                ],
                default="authorized",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="payment",
            index=models.Index(fields=["authorized_at"], name="payments_authorized_at_idx"),
        ),
        migrations.AddIndex(
            model_name="payment",
            index=models.Index(fields=["status", "authorized_at"], name="payments_status_idx"),
        ),
        migrations.AddConstraint(
            model_name="payment",
            constraint=models.CheckConstraint(
                condition=models.Q(("status__in", ["authorized", "captured", "capture_missed"])),
                name="payments_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="payment",
            constraint=models.CheckConstraint(
                condition=models.Q(("authorization_expires_at__gt", models.F("authorized_at"))),
                name="payments_authorization_expires_after_it_starts",
            ),
        ),
    ]
