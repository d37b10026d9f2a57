"""How long a /metrics scrape takes as the job table grows, beside an exact COUNT(*).

    python -m bench.metrics_scrape --size full     # 10 million jobs (BENCHMARKS.md)

The table holds a realistic mix: mostly succeeded history, some failed and cancelled,
scheduled jobs spread over the next month, a few in flight, and the attempts of the last
day (a few thousand in the last five minutes). The scrape is the collector's own work,
every figure but the dead-letter queue's depth (an SQS call, the same at any size).
The baseline is what a naive collector would run: an exact ``COUNT(*) GROUP BY status``.
"""

import logging

from bench.harness import (
    Row,
    median_of,
    parser,
    print_table,
    setup_django,
    stopwatch,
    truncate_jobs,
)

SIZES = {"tiny": 2_000, "small": 200_000, "full": 10_000_000}


def fill(total: int) -> None:
    """Replace the job tables' rows with ``total`` jobs and the last day's attempts."""
    from django.db import connection

    truncate_jobs()
    with connection.cursor() as cursor:
        # By share of the table: 94 % succeeded, 1 % each failed, cancelled, expired,
        # 3 % scheduled over the next 30 days; 50 enqueued and 20 running just now.
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, started_at, finished_at,
                 dispatch_token, enqueued_at, resend_at, retry_on_error)
            SELECT 'bench.task_' || (i %% 20), '[]', '{}', 'scheduler-jobs', run_at, status,
                   CASE WHEN status IN ('succeeded', 'failed', 'running') THEN 1 ELSE 0 END,
                   5, 0, '', now(), now(),
                   CASE WHEN status IN ('succeeded', 'failed', 'running') THEN run_at END,
                   CASE WHEN status IN ('succeeded', 'failed', 'cancelled', 'expired')
                        THEN run_at + interval '1 second' END,
                   CASE WHEN status IN ('enqueued', 'running') THEN gen_random_uuid() END,
                   CASE WHEN status IN ('enqueued', 'running') THEN run_at END,
                   CASE WHEN status = 'enqueued' THEN run_at + interval '5 minutes' END, true
            FROM (
                SELECT i,
                       CASE WHEN i <= 50 THEN 'enqueued'
                            WHEN i <= 70 THEN 'running'
                            WHEN i %% 100 < 94 THEN 'succeeded'
                            WHEN i %% 100 = 94 THEN 'failed'
                            WHEN i %% 100 = 95 THEN 'cancelled'
                            WHEN i %% 100 = 96 THEN 'expired'
                            ELSE 'scheduled' END AS status,
                       CASE WHEN i <= 70 OR i %% 100 >= 97
                            THEN now() + (i %% 43200) * interval '1 minute'
                            ELSE now() - (i %% 2592000) * interval '1 second' END AS run_at
                FROM generate_series(1, %s) AS i
            ) AS jobs
            """,
            [total],
        )
        # One attempt per job that ran in the last day; lateness up to a few seconds.
        cursor.execute(
            """
            INSERT INTO scheduler_jobattempt
                (job_id, task_name, number, dispatch_token, scheduled_for, started_at,
                 finished_at, outcome, error, worker)
            SELECT id, task_name, 1, gen_random_uuid(), run_at,
                   run_at + (id % 5000) * interval '1 millisecond',
                   run_at + interval '1 second',
                   CASE status WHEN 'failed' THEN 'error' ELSE 'succeeded' END, '', 'bench'
            FROM scheduler_scheduledjob
            WHERE status IN ('succeeded', 'failed') AND run_at > now() - interval '1 day'
            """
        )
        cursor.execute("VACUUM ANALYZE scheduler_scheduledjob")
        cursor.execute("VACUUM ANALYZE scheduler_jobattempt")


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    setup_django(args.database, keep=args.keep)
    # The left-out SQS call logs a warning on every scrape.
    logging.getLogger("scheduler.sqs").setLevel(logging.ERROR)
    from django.db import connection
    from django.test.utils import override_settings
    from prometheus_client.exposition import generate_latest

    from scheduler.integrations.metrics import SchedulerCollector

    total = SIZES[args.size]
    with stopwatch() as elapsed:
        fill(total)
    print(f"filled {total:,} jobs in {elapsed():.1f} s")

    def scrape() -> float:
        # Nothing answers on port 9: the SQS call fails at once and is left out.
        with override_settings(SCHEDULER_SQS_ENDPOINT_URL="http://127.0.0.1:9"), stopwatch() as t:
            generate_latest(SchedulerCollector())
        return t()

    def exact_count() -> float:
        with connection.cursor() as cursor, stopwatch() as t:
            cursor.execute("SELECT status, count(*) FROM scheduler_scheduledjob GROUP BY status")
            cursor.fetchall()
        return t()

    scrape()  # warm the caches, as a running web process has them
    rows = [
        Row(
            f"/metrics scrape, {total:,} jobs (median of 5)",
            median_of(5, scrape) * 1000,
            median_of(3, exact_count) * 1000,
            unit="ms",
            baseline_name="exact COUNT(*) GROUP BY status alone",
        )
    ]
    print_table(f"Metrics scrape at {total:,} jobs", rows)


if __name__ == "__main__":
    main()
