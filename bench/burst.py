"""Bursts: N runs due at the same instant, drained by one worker, three systems in turn.

Real processes on the project's own settings (see ``bench/precision.py``): this
project's jobs, plain Celery (``send_task`` with an ``eta``) and django-celery-beat
one-off ``ClockedSchedule`` tasks, each asked to run the probe task N times at one
instant, one system after the other, on the same worker (2 processes). Time to drain
= the last run's start - the due instant. For this project it also checks that every
job is enqueued half a second before the instant and that its message was in SQS by
then (moto's record of the messages it took, read after the drain); and for every
system that each run started once, none early. Any of these that fails makes the script
exit 1, saying which.

``--jobs 10000 --systems project,celery`` is the large burst.
"""

import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench.harness import (
    LIVE_SETTINGS_MODULE,
    PROBE_TASK,
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
#: Seconds before the instant by which every job must be enqueued, its message in SQS.
SENT_AHEAD = 0.5


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
    if system == "project":
        problems += _check_each_message(live, planned, by=due - SENT_AHEAD)
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
    """``SENT_AHEAD`` before ``due``: every job enqueued (the dispatcher marks a job so
    only once SQS took its message). Each message is checked after the drain, by
    :func:`_check_each_message`.

    What the server counts in the queue is printed beside it, with its own time, and
    not checked: moto counts visible, delayed and in-flight messages in three scans of
    the queue one after the other, so a message the worker receives, or whose delay
    ends, between two scans is in none (a few dozen of 10,000 here), and a server slowed
    by a large queue may answer after the first runs deleted their messages.
    """
    from scheduler.models import ScheduledJob
    from scheduler.states import Status

    time.sleep(max(0.0, due - SENT_AHEAD - time.time()))
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


def _check_each_message(live: LiveSystem, planned: Sequence[Due], *, by: float) -> list[str]:
    """Each of ``planned``'s jobs had exactly one message in SQS by ``by`` (epoch s).

    Read once the burst is over, from moto's own record: SQS shows no message without
    handing it to a receiver (the worker's), and listing a queue of 10,000 at the
    instant would stall the server being measured. moto keeps every message it took,
    deleted or not, with its id and send time (``/moto-api/data.json``, its dashboard's
    data): one request, outside the timed span, about 80 µs per message moto kept (0.8 s
    for 10,000). A job whose message was sent twice (the publisher's try again after a
    timeout) is printed, not a problem: the claim drops the copy.
    """
    from scheduler.models import ScheduledJob
    from scheduler.protocol import job_ref_from_sqs_body

    labels = {item.label for item in planned}
    jobs = {
        pk
        for pk, args in ScheduledJob.objects.filter(task_name=PROBE_TASK).values_list("pk", "args")
        if args[-1] in labels
    }
    url = f"{live.sqs.endpoint}/moto-api/data.json"  # the local server's, over http
    with urllib.request.urlopen(url, timeout=120) as answer:  # noqa: S310 - http, not a file
        messages = json.load(answer).get("sqs", {}).get("Message", [])
    # By message id: moto also keeps the copy of a message that each receive returns.
    ids: dict[int, set[str]] = defaultdict(set)
    for message in messages:
        ref = job_ref_from_sqs_body(message.get("body"))
        sent_ms = message.get("sent_timestamp")
        if ref is not None and ref.job_id in jobs and sent_ms is not None and sent_ms <= by * 1000:
            ids[ref.job_id].add(message["id"])
    sent = {pk: len(ids[pk]) for pk in jobs}
    missing = sorted(pk for pk in jobs if not sent[pk])
    twice = sorted(pk for pk in jobs if sent[pk] > 1)
    print(
        f"project: {len(jobs) - len(missing) - len(twice)} of {len(planned)} jobs with "
        f"exactly one message in SQS {-SENT_AHEAD:+.2f} s (moto's record, read after the drain)",
        flush=True,
    )
    problems = []
    if len(jobs) != len(planned):
        problems.append(f"{len(jobs)} jobs found for {len(planned)} runs")
    if missing:
        problems.append(
            f"{len(missing)} jobs with no message in SQS {SENT_AHEAD:.1f} s before the "
            f"instant (job ids {_some(missing)}"
            + ("; moto listed no message at all" if not messages else "")
            + ")"
        )
    if twice:
        # A send the publisher tried again after a timeout: the claim drops the copy, so
        # the job still runs once (which the outcome checks). Said, not failed.
        print(
            f"project: {len(twice)} jobs with more than one message in SQS "
            f"(job ids {_some(twice)})",
            flush=True,
        )
    return problems


def _some(ids: Sequence[int], shown: int = 5) -> str:
    return ", ".join(map(str, ids[:shown])) + (", …" if len(ids) > shown else "")


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
    with live_system(
        args.database, logs=args.logs, settings_module=args.settings, keep=args.keep
    ) as live:
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
