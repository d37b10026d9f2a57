"""A payment can be cancelled before its capture (its authorization voided).

The status check is replaced NOT VALID, then validated in a transaction of its own: the
validation reads the table without stopping its writes, where adding the check would
hold the table's lock for the scan.
"""

from django.db import migrations, models

STATUSES = ["authorized", "captured", "capture_missed", "cancelled"]
BEFORE = ["authorized", "captured", "capture_missed"]


def _check(statuses: list[str]) -> str:
    """The status check replaced, waiting 5 s at most for the table's lock (behind an
    atomic capture holding a payment, every read and write of the table would wait)."""
    listed = ", ".join(f"''{status}''" for status in statuses)
    return (
        "DO $$ BEGIN PERFORM set_config('lock_timeout', '5s', true); "
        "EXECUTE 'ALTER TABLE payments_payment DROP CONSTRAINT payments_status_valid, "
        f"ADD CONSTRAINT payments_status_valid CHECK (status IN ({listed})) NOT VALID'; "
        "END $$"
    )


VALIDATE = "ALTER TABLE payments_payment VALIDATE CONSTRAINT payments_status_valid"


class Migration(migrations.Migration):
    # Each statement commits on its own: validating in the transaction that added the
    # check would scan the table under the lock the ALTER took.
    atomic = False

    dependencies = [
        ("payments", "0003_capture_jobs_from_0_1"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="payment",
                    name="status",
                    field=models.CharField(
                        choices=[
                            ("authorized", "Authorized"),
                            ("captured", "Captured"),
                            ("capture_missed", "Capture missed"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="authorized",
                        max_length=16,
                    ),
                ),
                migrations.RemoveConstraint(model_name="payment", name="payments_status_valid"),
                migrations.AddConstraint(
                    model_name="payment",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("status__in", STATUSES)),
                        name="payments_status_valid",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(_check(STATUSES), [_check(BEFORE), VALIDATE]),
                # Migrating back, before the old check: a cancelled payment's capture
                # was not made, its hold released; the version before calls that a
                # missed capture.
                migrations.RunSQL(
                    migrations.RunSQL.noop,
                    "UPDATE payments_payment SET status = 'capture_missed' "
                    "WHERE status = 'cancelled'",
                ),
                migrations.RunSQL(VALIDATE, migrations.RunSQL.noop),
            ],
        ),
    ]
