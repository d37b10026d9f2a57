"""Bursts: N runs due at the same instant, drained by one worker, three systems in turn.

Real processes on the project's own settings (see ``bench/precision.py``): this
project's jobs, plain Celery (``send_task`` with an ``eta``) and django-celery-beat
one-off ``ClockedSchedule`` tasks, each asked to run the probe task N times at one
instant, one system after the other, on the same worker (2 processes). Time to drain
= the last run's start - the due instant. For this project it also checks, half a
second before the instant, that every job is enqueued and its message in SQS; and for
every system that each run started once, none early.

``--jobs 10000 --systems project,celery`` is the large burst.
"""

import time
from collections.abc import Sequence
from pathlib import Path

from bench.harness import (
    LIVE_SETTINGS_MODULE,
    SYSTEMS,
    Due,
    LiveSystem,
    Row,
    live_system,
    parser,
    print_table,
)

NAMES = {"project": "this project", "celery": "plain Celery", "beat": "beat one-off clocked"}
#: size -> (runs per burst, rounds)
SIZES = {"tiny": (30, 1), "small": (200, 1), "full": (500, 3)}
#: Seconds between submitting a burst and its instant, plus this much per run: the
#: dispatcher must send every job first, Celery's sends take a round trip each.
AHEAD_SECONDS = 6.0
AHEAD_PER_RUN = 0.02


def burst(
    live: LiveSystem, system: str, runs: int, *, queue: str, drain_timeout: float
) -> tuple[float, str]:
    """One burst of ``runs`` due at one instant; the drain time and any problem found."""
    due = time.time() + AHEAD_SECONDS + runs * AHEAD_PER_RUN
    planned = live.submit(system, [due] * runs)
    problems = []
    if system == "project":
        problems += _check_all_sent(live, planned, queue=queue, due=due)
    if not live.wait_for(planned, timeout=max(0.0, due - time.time()) + drain_timeout):
        problems.append(f"not all started within {drain_timeout:.0f} s of the instant")
    outcome = live.outcome(system, planned)
    if outcome.duplicated or outcome.early:
        problems.append(
            f"missing={outcome.missing} twice={outcome.duplicated} early={outcome.early}"
        )
    drain = max(outcome.lateness, default=float("nan")) if not outcome.missing else float("nan")
    print(
        f"{system}: {runs - outcome.missing} of {runs} runs started, the last "
        f"{max(outcome.lateness, default=float('nan')):.3f} s after their instant "
        f"(first started {min(outcome.lateness, default=float('nan')) * 1000:.1f} ms after) "
        + ("; ".join(problems) or "once each, none early"),
        flush=True,
    )
    return drain, "; ".join(problems)


def _check_all_sent(
    live: LiveSystem, planned: Sequence[Due], *, queue: str, due: float
) -> list[str]:
    """Half a second before ``due``: every job enqueued. The dispatcher marks a job so
    only once SQS took its message, which is the check.

    What the server counts in the queue is printed beside it, with its own time, and
    not checked: moto counts visible, delayed and in-flight messages in three scans of
    the queue one after the other, so a message the worker receives, or whose delay
    ends, between two scans is in none (a few dozen of 10,000 here), and a server slowed
    by a large queue may answer after the first runs deleted their messages. A send
    that boto3 retried after a timeout may be there twice: the claim drops the copy.
    """
    from scheduler.models import ScheduledJob
    from scheduler.states import Status

    time.sleep(max(0.0, due - 0.5 - time.time()))
    enqueued = ScheduledJob.objects.filter(status=Status.ENQUEUED).count()
    enqueued_at = time.time() - due
    in_sqs = live.sqs.messages(queue)
    in_sqs_at = time.time() - due
    print(
        f"project: {enqueued_at:+.2f} s: enqueued={enqueued}; {in_sqs_at:+.2f} s: in_sqs={in_sqs}",
        flush=True,
    )
    if enqueued == len(planned) and enqueued_at < 0:
        return []
    return [f"{enqueued} of {len(planned)} enqueued {enqueued_at:+.2f} s from the instant"]


def main(argv: list[str] | None = None) -> int:
    """Run the bursts; 0 unless a run was lost, ran twice or early, or jobs were sent late."""
    import os

    arguments = parser(__doc__ or "")
    arguments.add_argument("--jobs", type=int, default=None, help="runs per burst")
    arguments.add_argument("--rounds", type=int, default=None, help="bursts per system")
    arguments.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds after the instant to wait for every run (120)",
    )
    arguments.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"some of {','.join(SYSTEMS)}"
    )
    arguments.add_argument(
        "--settings", default=LIVE_SETTINGS_MODULE, help="Django settings of every process"
    )
    arguments.add_argument("--logs", type=Path, default=None, help="save the processes' logs here")
    args = arguments.parse_args(argv)
    runs, rounds = SIZES[args.size]
    runs, rounds = args.jobs or runs, args.rounds or rounds
    systems = [system for system in SYSTEMS if system in args.systems.split(",")]
    drains: dict[str, list[float]] = {system: [] for system in systems}
    problems: list[str] = []
    with live_system(args.database, logs=args.logs, settings_module=args.settings) as live:
        queue = os.environ["SCHEDULER_QUEUE_NAME"]
        for round_ in range(rounds):
            # Each round starts with another system, so none always runs first.
            for system in systems[round_ % len(systems) :] + systems[: round_ % len(systems)]:
                drain, problem = burst(
                    live, system, runs, queue=queue, drain_timeout=args.drain_timeout
                )
                drains[system].append(drain)
                if problem:
                    problems.append(f"{system}: {problem}")
                time.sleep(1)  # the worker idle again before the next burst
    median = {system: sorted(values)[len(values) // 2] for system, values in drains.items()}
    baseline = median.get("celery")
    print_table(
        f"{runs} runs due at one instant, one worker (2 processes); median of {rounds}",
        [
            Row(
                f"time to drain: {NAMES[system]}",
                median[system],
                None if system == "celery" else baseline,
                "s",
                "plain Celery",
            )
            for system in systems
        ],
    )
    for problem in problems:
        print(f"PROBLEM {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
