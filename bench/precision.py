"""Precision: how late each run starts, for this project, Celery's countdown and beat.

Real processes on the project's own settings (a moto SQS server, one `celery worker`
with 2 processes, `celery beat` as the dispatcher). The same worker runs the probe task
(``testapp.record``: its body starts by writing ``time.time()`` to a file) for three
systems: this project's jobs (``schedule_many``), plain Celery (``send_task`` with an
``eta``: the worker holds the message until then) and django-celery-beat one-off
``ClockedSchedule`` tasks. Each run is submitted ``SUBMIT_AHEAD`` seconds before it is
due. Lateness = start of the body - due time. Two scenarios:

- steady: each system's runs spread evenly over a window, the three interleaved;
- idle: one run at a time, far apart, so nothing else reaches the worker in between
  (moto re-checks delayed messages once a second when no other request arrives).

Prints p50/p90/p99/max and the early, missing and duplicated runs per system, and
draws a histogram (``--plot``). Exits 1 when this project ran a job early, twice or
not at all.
"""

import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.harness import SYSTEMS, Due, LiveSystem, Outcome, live_system, parser, print_markdown

#: Seconds before its due time each run is submitted: beat rereads its schedule within
#: 5 s, and the dispatcher (a tick every 5 s) still sends the job with a DelaySeconds.
SUBMIT_AHEAD = 8.0
#: size -> (steady runs per system, steady window s, idle runs per system, idle gap s)
SIZES = {
    "tiny": (8, 6.0, 1, 3.5),
    "small": (60, 60.0, 6, 4.0),
    "full": (300, 300.0, 30, 4.0),
}
RESULTS = Path(__file__).resolve().parent / "results"


def plan_steady(runs: int, window: float, *, start: float, rng: random.Random) -> list[Due]:
    """Each system's runs evenly over ``window``, at random offsets within each slot."""
    step = window / runs
    return [
        Due("", system, start + (i + rng.random()) * step)
        for i in range(runs)
        for system in SYSTEMS
    ]


def plan_idle(runs: int, gap: float, *, start: float, rng: random.Random) -> list[Due]:
    """One run every ``gap`` seconds (plus a random fraction of a second), systems in turn."""
    return [
        Due("", SYSTEMS[i % len(SYSTEMS)], start + i * gap + rng.random() * 0.9)
        for i in range(runs * len(SYSTEMS))
    ]


def run_plans(live: LiveSystem, plans: Sequence[Sequence[Due]]) -> list[list[Due]]:
    """Submit each run ``SUBMIT_AHEAD`` seconds before it is due, plans on one timeline;
    wait until all started. The runs as submitted (labelled), plan by plan."""
    submitted: list[list[Due]] = [[] for _ in plans]
    timeline = sorted(
        ((item, index) for index, plan in enumerate(plans) for item in plan),
        key=lambda pair: pair[0].due,
    )
    for item, index in timeline:
        pause = item.due - SUBMIT_AHEAD - time.time()
        if pause > 0:
            time.sleep(pause)
        submitted[index].extend(live.submit(item.system, [item.due]))
    every = [item for plan in submitted for item in plan]
    last_due = max(item.due for item in every)
    live.wait_for(every, timeout=max(0.0, last_due - time.time()) + 60)
    return submitted


def print_outcomes(title: str, outcomes: Sequence[Outcome]) -> None:
    """A Markdown table of the lateness of each system, in milliseconds."""
    print_markdown(
        title,
        ["system", "runs", "p50", "p90", "p99", "max", "early", "missing", "twice"],
        (
            [
                outcome.system,
                str(len(outcome.lateness)),
                *(f"{outcome.percentile(p) * 1000:,.1f} ms" for p in (50, 90, 99)),
                f"{max(outcome.lateness, default=0.0) * 1000:,.1f} ms",
                str(outcome.early),
                str(outcome.missing),
                str(outcome.duplicated),
            ]
            for outcome in outcomes
        ),
    )


def plot(scenarios: dict[str, list[Outcome]], path: Path, *, title: str) -> None:
    """One histogram of lateness per scenario, the systems overlaid, log-scaled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(len(scenarios), 1, figsize=(9, 3.4 * len(scenarios)))
    bins = np.logspace(-1, 4.5, 56)  # 0.1 ms to 30 s
    for axis, (scenario, outcomes) in zip(np.atleast_1d(axes), scenarios.items(), strict=True):
        for outcome in outcomes:
            late_ms = [max(value * 1000, 0.1) for value in outcome.lateness]
            label = (
                f"{outcome.system}: p50 {outcome.percentile(50) * 1000:,.1f} ms, "
                f"p99 {outcome.percentile(99) * 1000:,.1f} ms, early {outcome.early}"
            )
            axis.hist(late_ms, bins=bins, histtype="step", linewidth=1.6, label=label)
        axis.set_xscale("log")
        axis.set_xlabel("lateness: start of the body - due time (ms, log scale)")
        axis.set_ylabel("runs")
        axis.set_title(scenario)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Run both scenarios; 0 unless this project ran a job early, twice or not at all."""
    arguments = parser(__doc__ or "")
    arguments.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="histogram PNG (default: bench/results/lateness.png at full size, else a "
        "temporary file)",
    )
    arguments.add_argument("--seed", type=int, default=1)
    arguments.add_argument("--logs", type=Path, default=None, help="save the processes' logs here")
    args = arguments.parse_args(argv)
    steady_runs, window, idle_runs, gap = SIZES[args.size]
    # Not for security: spreads due times off whole seconds, repeatably.
    rng = random.Random(args.seed)  # noqa: S311
    with live_system(args.database, logs=args.logs, keep=args.keep) as live:
        # Planned once every process is up (that takes seconds), so that even the first
        # runs are submitted SUBMIT_AHEAD before they are due.
        steady_start = time.time() + SUBMIT_AHEAD + 1
        plans = {
            f"steady: {steady_runs} runs per system over {window:.0f} s, interleaved": (
                plan_steady(steady_runs, window, start=steady_start, rng=rng)
            ),
            f"idle: {idle_runs} runs per system, one every {gap:.1f} s": plan_idle(
                idle_runs, gap, start=steady_start + window + gap, rng=rng
            ),
        }
        submitted = run_plans(live, list(plans.values()))
        scenarios = {
            name: [live.outcome(system, runs) for system in SYSTEMS]
            for name, runs in zip(plans, submitted, strict=True)
        }
    for name, outcomes in scenarios.items():
        print_outcomes(name, outcomes)
    path = args.plot or (
        RESULTS / "lateness.png"
        if args.size == "full"
        else Path(tempfile.gettempdir()) / f"lateness-{args.size}.png"
    )
    plot(scenarios, path, title="Lateness on one worker (2 processes), moto SQS")
    print(f"\nhistogram: {path}")
    ours = [outcome for outcomes in scenarios.values() for outcome in outcomes[:1]]
    return 1 if any(o.early or o.missing or o.duplicated for o in ours) else 0


if __name__ == "__main__":
    raise SystemExit(main())
