"""Soak: many jobs over many minutes while workers are killed and the SQS server restarts.

Not a test (it takes longer than CI allows): ``python -m bench.soak`` schedules 10,000
jobs due over the next 10 minutes (half plain, half atomic; one in fifty cancelled, one
in five hundred running for more than two leases) and runs them on real `celery worker`
and dispatcher processes (``tests.chaos.harness``, with the chaos suite's settings:
lease 5 s, re-send after 2 s). About once a minute it SIGKILLs a random worker and starts
another; halfway through it restarts the SQS server, losing every message in it. Then it
waits for the backlog to drain and prints, from the effects table, what must be zero —
lost jobs, atomic effects twice, cancelled jobs that ran, jobs that started early — and
the lateness percentiles; it exits 1 if one of them is not zero. ``--jobs 300 --minutes
1`` checks the script in a few minutes.
"""

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import setup_django, truncate_jobs

if TYPE_CHECKING:
    from tests.chaos.effects import Planned, Report, Workload
    from tests.chaos.harness import Cluster, SqsServer

#: One job in this many is cancelled; one in ten times as many runs for over two leases.
CANCEL_ONE_IN = 50
LONG_ONE_IN = 500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The soak's options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to schedule (10,000)")
    parser.add_argument("--minutes", type=float, default=10.0, help="window they are due in (10)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    parser.add_argument("--concurrency", type=int, default=4, help="pool size of each (4)")
    parser.add_argument("--dispatchers", type=int, default=2, help="dispatcher processes (2)")
    parser.add_argument(
        "--kill-every", type=float, default=60.0, help="mean seconds between worker kills (60)"
    )
    parser.add_argument(
        "--drain-minutes", type=float, default=10.0, help="longest wait for the backlog (10)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--database", default="bench_soak", help="database (tables replaced)")
    parser.add_argument(
        "--logs", type=Path, default=Path("soak-logs"), help="where the processes' logs go"
    )
    return parser.parse_args(argv)


def say(message: str) -> None:
    """One line of progress."""
    print(f"{time.strftime('%H:%M:%S')} soak | {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when nothing was lost, run twice, run cancelled or run early."""
    args = parse_args(argv)
    # Not for security: a seed to replay a run's random kills and times.
    seed = args.seed if args.seed is not None else random.randrange(2**32)  # noqa: S311
    say(f"seed={seed} jobs={args.jobs} minutes={args.minutes} workers={args.workers}")

    from tests.chaos.harness import SqsServer

    # This process and the cluster's agree on the server and the queue through the
    # environment, which project.settings reads.
    sqs = SqsServer()
    os.environ["SQS_ENDPOINT_URL"] = sqs.endpoint
    os.environ["SCHEDULER_QUEUE_NAME"] = f"soak-{uuid.uuid4().hex[:8]}"
    setup_django(args.database, settings_module="tests.settings_chaos")
    sqs.start()
    try:
        report = _soak(args, random.Random(seed), sqs)  # noqa: S311
    finally:
        sqs.stop()
    print(report.summary(), flush=True)
    must_be_zero = [report.lost, report.duplicated_atomic, report.cancelled_ran, report.early]
    return 1 if any(must_be_zero) or report.unfinished else 0


def _soak(args: argparse.Namespace, rng: random.Random, sqs: "SqsServer") -> "Report":
    from django.db import connection
    from django.utils import timezone

    from scheduler.dispatch.queues import ensure_queue
    from tests.chaos.effects import Workload
    from tests.chaos.harness import Cluster, child_env
    from tests.settings_chaos import SCHEDULER_LEASE_SECONDS
    from tests.testapp.models import Effect

    truncate_jobs()
    Effect.objects.all().delete()
    ensure_queue()
    workload = Workload("soak")
    start = timezone.now() + timedelta(seconds=15)
    _schedule(workload, args, rng, start=start, long_seconds=2.5 * SCHEDULER_LEASE_SECONDS)
    to_cancel = sorted(
        rng.sample(sorted(workload.planned), args.jobs // CANCEL_ONE_IN),
        key=lambda label: workload.planned[label].run_at,
    )
    env = child_env(
        database=connection.settings_dict,
        endpoint=sqs.endpoint,
        queue=os.environ["SCHEDULER_QUEUE_NAME"],
    )
    with tempfile.TemporaryDirectory() as workdir:
        cluster = Cluster(env=env, workdir=Path(workdir))
        try:
            cluster.start_dispatchers(args.dispatchers)
            cluster.start_workers(args.workers, concurrency=args.concurrency)
            _run_with_faults(
                cluster, workload, [workload.planned[label] for label in to_cancel], args, rng, sqs
            )
            say(f"window over, draining (at most {args.drain_minutes} min): {_progress(workload)}")
            deadline = time.monotonic() + args.drain_minutes * 60
            while workload.unfinished() and time.monotonic() < deadline:
                _replace_exited(cluster, args)
                time.sleep(1)
            say(f"drained: {_progress(workload)}")
            return workload.report()
        finally:
            cluster.save_logs(args.logs)
            say(f"process logs in {args.logs}/")
            cluster.close()


def _schedule(
    workload: "Workload",
    args: argparse.Namespace,
    rng: random.Random,
    *,
    start: datetime,
    long_seconds: float,
) -> None:
    """Plain and atomic jobs at random times in the window, a few of them long."""
    window = args.minutes * 60
    long_count = max(2, args.jobs // LONG_ONE_IN)
    short_count = args.jobs - long_count
    groups = [
        (short_count // 2, False, 0.0),
        (short_count - short_count // 2, True, 0.0),
        (long_count // 2, False, long_seconds),
        (long_count - long_count // 2, True, long_seconds),
    ]
    for count, atomic, seconds in groups:
        times = sorted(start + timedelta(seconds=rng.uniform(0, window)) for _ in range(count))
        workload.schedule(count, at=times.__getitem__, atomic=atomic, seconds=seconds)
    say(f"scheduled {len(workload.planned)} jobs from {start:%H:%M:%S} over {window:.0f} s")


def _run_with_faults(
    cluster: "Cluster",
    workload: "Workload",
    to_cancel: "list[Planned]",
    args: argparse.Namespace,
    rng: random.Random,
    sqs: "SqsServer",
) -> None:
    """Until the window is over: cancel, kill workers, restart the SQS server once."""
    from django.utils import timezone

    from scheduler.dispatch.queues import ensure_queue

    # A third are cancelled while still in PostgreSQL, the rest once sent to SQS
    # (the lookahead is 3 s: two seconds before run_at they are enqueued).
    for planned in to_cancel[: len(to_cancel) // 3]:
        workload.cancel(planned)
    pending = to_cancel[len(to_cancel) // 3 :]
    began = time.monotonic()
    window_end = began + args.minutes * 60 + 15
    restart_at = began + args.minutes * 60 / 2
    next_kill = began + rng.expovariate(1 / args.kill_every)
    next_progress = began + 30
    while time.monotonic() < window_end:
        _replace_exited(cluster, args)
        soon = timezone.now() + timedelta(seconds=2)
        while pending and pending[0].run_at <= soon:
            workload.cancel(pending.pop(0))
        if restart_at and time.monotonic() >= restart_at:
            say("restarting the SQS server: every message in it is lost")
            sqs.restart()
            ensure_queue()
            restart_at = 0.0
        if time.monotonic() >= next_kill:
            victim = rng.choice(cluster.workers)
            say(f"SIGKILL {victim.name}")
            cluster.kill(victim)
            cluster.start_workers(1, concurrency=args.concurrency)
            next_kill = time.monotonic() + rng.expovariate(1 / args.kill_every)
        if time.monotonic() >= next_progress:
            say(_progress(workload))
            next_progress += 30
        time.sleep(0.2)


def _replace_exited(cluster: "Cluster", args: argparse.Namespace) -> None:
    # As ECS or systemd would: a worker that exits on its own is replaced.
    if replaced := cluster.replace_exited_workers(concurrency=args.concurrency):
        say(f"{replaced} worker(s) exited on their own: replaced")


def _progress(workload: "Workload") -> str:
    return " ".join(f"{status}={count}" for status, count in sorted(workload.statuses().items()))


if __name__ == "__main__":
    raise SystemExit(main())
