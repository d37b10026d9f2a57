"""Bring 0.1.0's capture jobs and payments to what 0.2.0 promises.

0.1.0 scheduled a capture with five attempts and no deadline: a capture still pending
gets the authorization's expiry as its deadline and the attempts of a new one, so a
gateway outage on its day delays it and does not lose it. 0.1.0 left a payment
authorized when its capture job failed: such a payment gets the job that records it
missed (unless the gateway holds its capture), as a receiver would now schedule. One
whose capture job was cancelled is left as it is: that was 0.1.0's only way to cancel
an order, which ``cancel_payment`` now does (the CHANGELOG's upgrade notes). Rows only,
by the payments' capture job: no table is locked.
"""

from django.db import migrations

PENDING_CAPTURES = """
UPDATE scheduler_scheduledjob AS job
SET deadline = payment.authorization_expires_at,
    max_attempts = GREATEST(job.max_attempts, 1000),
    updated_at = now()
FROM payments_payment AS payment
WHERE payment.capture_job_id = job.id
  AND payment.status = 'authorized'
  AND job.task_name = 'payments.capture_payment'
  AND job.status IN ('scheduled', 'enqueued')
  AND job.deadline IS NULL
  AND job.run_at < payment.authorization_expires_at
"""

MISSED_CAPTURES = """
INSERT INTO scheduler_scheduledjob
    (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts, sends,
     last_error, retry_on_error, held, created_at, updated_at)
SELECT 'payments.record_missed_capture', '[]', jsonb_build_object('capture_job_id', job.id),
       job.queue, now(), 'scheduled', 0, 1000, 0, '', true, false, now(), now()
FROM payments_payment AS payment
JOIN scheduler_scheduledjob AS job ON job.id = payment.capture_job_id
WHERE payment.status = 'authorized'
  AND job.task_name = 'payments.capture_payment'
  AND job.status IN ('failed', 'expired')
"""


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0002_authorization_expiry"),
        ("scheduler", "0016_form_submissions"),
    ]

    operations = [
        migrations.RunSQL(PENDING_CAPTURES, migrations.RunSQL.noop),
        migrations.RunSQL(MISSED_CAPTURES, migrations.RunSQL.noop),
    ]
