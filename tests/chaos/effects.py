"""Judging a run from the effects table: nothing lost, nothing twice, nothing early.

A :class:`Workload` schedules jobs of the test tasks ``testapp.effect`` (plain: one
committed Effect row per run) and ``testapp.atomic_effect`` (its row written in the
job's transaction), each with a unique label, and remembers when each may run and
which were cancelled. Its :meth:`Workload.report` compares that with the Effect rows.
"""

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler import cancel
from scheduler.conf import scheduler_settings
from scheduler.exceptions import InvalidTransitionError
from scheduler.models import ScheduledJob
from scheduler.states import ACTIVE, Status
from tests.processes import wait_until
from tests.testapp.models import Effect

PLAIN_TASK = "testapp.effect"
ATOMIC_TASK = "testapp.atomic_effect"


def spread(start: datetime, every: float = 0.0) -> Callable[[int], datetime]:
    """Job ``i`` due at ``start + i * every`` seconds."""
    return lambda i: start + timedelta(seconds=i * every)


@dataclass
class Planned:
    """One job of a workload: what it is and what it may do."""

    label: str
    job_id: int
    run_at: datetime
    atomic: bool
    cancelled: bool = False


@dataclass
class Report:
    """What the effects table says about a workload."""

    jobs: int
    cancelled: int
    #: Labels of jobs not cancelled that left no effect.
    lost: list[str] = field(default_factory=list)
    #: Labels of atomic jobs with more than one effect.
    duplicated_atomic: list[str] = field(default_factory=list)
    #: Labels of plain jobs with more than one effect (allowed only after a crash).
    duplicated_plain: list[str] = field(default_factory=list)
    cancelled_ran: list[str] = field(default_factory=list)
    #: Labels of jobs with an effect before their run_at.
    early: list[str] = field(default_factory=list)
    #: Jobs not cancelled that did not end succeeded: label -> status.
    not_succeeded: dict[str, str] = field(default_factory=dict)
    #: Jobs still scheduled, enqueued or running when the report was made, by status.
    unfinished: dict[str, int] = field(default_factory=dict)
    #: Seconds from run_at to each job's first effect.
    lateness: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        """The p-th percentile of lateness, in seconds (0 without data)."""
        if len(self.lateness) < 2:
            return self.lateness[0] if self.lateness else 0.0
        return statistics.quantiles(self.lateness, n=100, method="inclusive")[int(p) - 1]

    def summary(self) -> str:
        """One line per figure, for a failing assertion or the soak's output."""
        return "\n".join(
            [
                f"jobs={self.jobs} cancelled={self.cancelled} unfinished={self.unfinished}",
                f"lost={len(self.lost)} {self.lost[:10]}",
                f"duplicated_atomic={len(self.duplicated_atomic)} {self.duplicated_atomic[:10]}",
                f"duplicated_plain={len(self.duplicated_plain)} {self.duplicated_plain[:10]}",
                f"cancelled_ran={len(self.cancelled_ran)} {self.cancelled_ran[:10]}",
                f"early={len(self.early)} {self.early[:10]}",
                f"not_succeeded={len(self.not_succeeded)} {list(self.not_succeeded.items())[:10]}",
                "lateness_seconds "
                + " ".join(f"p{p}={self.percentile(p):.3f}" for p in (50, 90, 99))
                + f" max={max(self.lateness, default=0.0):.3f}",
            ]
        )

    def assert_clean(self, *, plain_once: bool) -> None:
        """Nothing lost, no atomic effect twice, no cancelled job run, nothing early.

        ``plain_once`` also requires plain jobs to have run once: true whenever no
        worker died mid-job (duplicate deliveries are fenced by the dispatch token).
        """
        problems = [
            self.unfinished,
            self.lost,
            self.duplicated_atomic,
            self.cancelled_ran,
            self.early,
            self.not_succeeded,
            plain_once and self.duplicated_plain,
        ]
        assert not any(problems), self.summary()


class Workload:
    """Jobs of the test tasks, labelled ``<name>-<n>``, and the judgement of their run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.planned: dict[str, Planned] = {}

    def schedule(
        self,
        count: int,
        *,
        at: Callable[[int], datetime],
        atomic: bool = False,
        seconds: float = 0.0,
        max_attempts: int = 10,
    ) -> list[Planned]:
        """Insert ``count`` jobs in one statement; job ``i`` is due at ``at(i)``.

        Inserted directly rather than through ``schedule_at`` so that thousands take a
        second; the public API is exercised by the API and fuzz tests.
        """
        start = len(self.planned)
        rows = [
            ScheduledJob(
                task_name=ATOMIC_TASK if atomic else PLAIN_TASK,
                args=[f"{self.name}-{start + i}", seconds],
                queue=scheduler_settings.QUEUE_NAME,
                run_at=at(i),
                max_attempts=max_attempts,
            )
            for i in range(count)
        ]
        created = ScheduledJob.objects.bulk_create(rows, batch_size=1000)
        planned = [
            Planned(label=job.args[0], job_id=job.pk, run_at=job.run_at, atomic=atomic)
            for job in created
        ]
        self.planned.update((p.label, p) for p in planned)
        return planned

    def schedule_both(
        self, count: int, *, at: Callable[[int], datetime], seconds: float = 0.0
    ) -> list[Planned]:
        """Half plain jobs, half atomic ones; job ``i`` of each half is due at ``at(i)``."""
        return [
            *self.schedule(count // 2, at=at, seconds=seconds),
            *self.schedule(count - count // 2, at=at, atomic=True, seconds=seconds),
        ]

    def cancel(self, planned: Planned) -> bool:
        """Cancel a job if it has not started; remember it when that worked."""
        try:
            planned.cancelled = cancel(planned.job_id)
        except InvalidTransitionError:
            return False
        return planned.cancelled

    def job_ids(self) -> list[int]:
        """Every job of the workload."""
        return [p.job_id for p in self.planned.values()]

    def unfinished(self) -> int:
        """How many jobs are still scheduled, enqueued or running."""
        return ScheduledJob.objects.filter(pk__in=self.job_ids(), status__in=ACTIVE).count()

    def settle(self, *, timeout: float) -> "Report":
        """Wait until no job is scheduled, enqueued or running (or ``timeout``); report."""
        wait_until(lambda: self.unfinished() == 0, timeout=timeout, interval=0.5)
        return self.report()

    def statuses(self) -> Counter[str]:
        """How many jobs are in each status."""
        return Counter(
            ScheduledJob.objects.filter(pk__in=self.job_ids()).values_list("status", flat=True)
        )

    def effects(self) -> dict[str, list[datetime]]:
        """The times of each label's effects."""
        by_label: dict[str, list[datetime]] = defaultdict(list)
        rows = Effect.objects.filter(label__startswith=f"{self.name}-").values_list("label", "at")
        for label, at in rows:
            by_label[label].append(at)
        return by_label

    def report(self) -> Report:
        """Compare the effects table with the plan."""
        effects = self.effects()
        status_of = dict(
            ScheduledJob.objects.filter(pk__in=self.job_ids()).values_list("pk", "status")
        )
        report = Report(
            jobs=len(self.planned),
            cancelled=sum(p.cancelled for p in self.planned.values()),
            unfinished={
                status: count for status, count in self.statuses().items() if status in ACTIVE
            },
        )
        for label, planned in self.planned.items():
            times = sorted(effects.get(label, []))
            if planned.cancelled:
                if times:
                    report.cancelled_ran.append(label)
                continue
            if not times:
                report.lost.append(label)
                continue
            if len(times) > 1:
                (report.duplicated_atomic if planned.atomic else report.duplicated_plain).append(
                    label
                )
            if times[0] < planned.run_at:
                report.early.append(label)
            report.lateness.append((times[0] - planned.run_at).total_seconds())
            status = status_of.get(planned.job_id)
            if status != Status.SUCCEEDED:
                report.not_succeeded[label] = str(status)
        return report
