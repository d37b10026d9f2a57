"""The dispatcher: moves jobs that are nearly due from PostgreSQL to SQS.

Each tick claims due rows with ``FOR UPDATE SKIP LOCKED`` in batches, marking them
enqueued with a fresh dispatch token in the same statement, and sends them with
``DelaySeconds = run_at - now - DELIVERY_LEAD`` so SQS releases them just before their
time, all in one short transaction per batch; what SQS refuses is put back before the
commit. The delays count from the moment they were computed: the time the claim and the
sends take is taken off them, so it never makes a message land late. Every
``SCHEDULER_RECOVERY_INTERVAL_SECONDS`` a tick first recovers lost work: unclaimed jobs
are sent again with the same token, jobs whose lease expired are retried, jobs past their
deadline expire; hourly (and at each recovery while more are left), old jobs are purged.
Any number of dispatchers may tick at once.
"""

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import (
    DatabaseError,
    Error,
    InterfaceError,
    close_old_connections,
    connection,
    transaction,
)
from django.utils import timezone

from scheduler.backoff import exponential_backoff
from scheduler.clock import check_clock
from scheduler.conf import OUTAGE_BACKOFF_INTERVALS, scheduler_settings
from scheduler.dispatch.publisher import OutgoingMessage, Publisher, PublishResult, SQSPublisher
from scheduler.models import watched_queues
from scheduler.protocol import release_in, whole_delay
from scheduler.queue_needs import check_queues
from scheduler.services import dispatching, refusals
from scheduler.services.dispatching import Pending

logger = logging.getLogger(__name__)

_PURGE_EVERY_SECONDS = 3600.0
#: How long the jobs of a queue SQS refused (one that does not exist, one the dispatcher
#: may not send to) wait in PostgreSQL before the dispatcher takes them and asks SQS
#: again. Taken in every batch, a batch or more of them, oldest first, would hold back
#: every other due job, and each batch would write their rows twice (taken, put back).
REFUSED_QUEUE_RECHECK_SECONDS = 5.0
#: How long a batch's transaction may sit idle, sending its jobs, before PostgreSQL ends
#: its session. A dispatcher frozen or cut off (its host gone) between its claim and its
#: commit held the rows until the server's TCP keepalive gave up, two hours by default,
#: every other dispatcher skipping them; ended, the claim rolls back, the messages it
#: sent carry tokens that never were (the workers drop them), and the jobs go again.
#: Above the publisher's own limit (:data:`~scheduler.dispatch.publisher.PUBLISH_SECONDS`)
#: and the try of a call it may have started just before (15 s at most).
CLAIM_IDLE_TIMEOUT = timedelta(minutes=2)


@dataclass
class TickResult:
    """What one tick did."""

    sent: int = 0
    failed: int = 0
    resent: int = 0
    leases_expired: int = 0
    expired: int = 0
    purged: int = 0
    #: Due jobs of paused kinds set aside, and held jobs released on resume.
    held: int = 0
    released: int = 0
    errors: list[str] = field(default_factory=list)
    #: Whether PostgreSQL or SQS failed (not only refused a queue): ``run()`` backs off.
    outage: bool = False


@dataclass(frozen=True)
class BatchResult:
    """What one batch became: jobs taken, sent and refused by the queue."""

    taken: int
    sent: int
    failed: int
    error: str | None = None
    #: The queues SQS refused, with what it said; their jobs are in ``failed``.
    refused_queues: dict[str, str] = field(default_factory=dict)
    #: Whether SQS is failing: the tick stops at this batch (its next would only fail
    #: again, the failed jobs, left as they were, coming back) and ``run()`` backs off.
    outage: bool = False

    @classmethod
    def of(cls, jobs: Sequence[Pending], published: PublishResult) -> "BatchResult":
        """The result of sending ``jobs`` as ``published``.

        An outage when a call failed outright, or when SQS took none of the batch but
        for the jobs of queues it refused. Entries it failed one by one in calls that
        took others (``InternalError``, ``KMS.ThrottlingException`` on one message of
        a hundred) are errors, their jobs put back for the next batch: stopping the
        tick there, and backing off, held back every other due job.
        """
        queues = published.refused_queues
        rejected = sum(
            1 for job in jobs if job.job_id in published.failed and job.queue not in queues
        )
        error = None
        if published.error:
            error = f"sqs: {published.error}"
        elif rejected:
            error = f"sqs rejected {rejected} message(s)"
        return cls(
            taken=len(jobs),
            sent=len(published.sent),
            failed=len(published.failed),
            error=error,
            refused_queues=queues,
            outage=published.error is not None or bool(rejected and not published.sent),
        )


#: The earliest eta a message carries. A worker subtracts from its eta (the hand-off,
#: a zone west of UTC): from the first day of year 1 that overflowed, and a job due
#: then ("as soon as possible") was dropped at every send.
EARLIEST_ETA = datetime(1, 1, 2, tzinfo=UTC)


def check_at_start(*, process: str) -> None:
    """What a dispatcher checks once, as it starts: its host's clock, and the queues it
    sends to (the default, and those of jobs not yet ended) against what jobs need, for
    :data:`~scheduler.sqs.PEEK_DEADLINE_SECONDS` at most."""
    check_clock(process=process)
    try:
        queues = watched_queues(default=scheduler_settings.QUEUE_NAME, live=True)
    except Error:
        # PostgreSQL out of reach: the clock's line and the ticks say so.
        queues = [scheduler_settings.QUEUE_NAME]
    check_queues(queues, process=process)


def _messages(
    jobs: Sequence[Pending], *, now: datetime, as_of: float | None = None
) -> list[OutgoingMessage]:
    """The messages of ``jobs``, each released by SQS just before its run_at.

    ``as_of`` is when (``time.monotonic()``, read just before ``now``) the delays count
    from: the publisher takes off whatever time passes until each send (the claim, a
    queue URL looked up, slow calls). By default, this call.
    """
    max_delay = scheduler_settings.MAX_DELAY_SECONDS
    lead = scheduler_settings.DELIVERY_LEAD_SECONDS
    if as_of is None:
        as_of = time.monotonic()
    messages: list[OutgoingMessage] = []
    # A thousand per batch: unpacked and built by position, at half the cost of reading
    # each field by name and passing it by keyword.
    append = messages.append
    for job_id, task_name, queue, run_at, token, _, celery_task_id, _ in jobs:
        # The time left until the release, as of as_of (negative once past): the delay
        # is that rounded down, so exactly the delay was left a fraction of a second
        # later. The publisher counts the time gone from then.
        left = release_in(run_at, now=now, max_delay=max_delay, lead=lead)
        delay = whole_delay(left)
        eta = max(run_at, EARLIEST_ETA)
        append(
            OutgoingMessage(
                job_id, token, task_name, queue, eta, delay, celery_task_id, as_of + left - delay
            )
        )
    return messages


def _in_batches(
    step: Callable[..., int], now: datetime, until: float, *, full: int | None = None
) -> int:
    """Run ``step`` (one transaction of at most ``full`` rows, a batch by default) until
    it comes back short or the monotonic clock reaches ``until``; how many rows it took
    in all."""
    full = scheduler_settings.BATCH_SIZE if full is None else full
    total = 0
    while True:
        taken = step(now=now)
        total += taken
        if taken < full or time.monotonic() >= until:
            return total


class Dispatcher:
    """Runs dispatch ticks, once (``run_once``) or in a loop (``run``).

    A dispatcher judges no lease in its first lease: it cannot know whether PostgreSQL
    was out of reach just before it started (a supervisor replaces one that failed its
    health checks in an outage), and the workers may not have beaten since.
    ``judge_leases_at_once`` is for a tick an operator asks for (``scheduler_dispatch
    --once``) and ticks on a test's frozen clock (``run_due_jobs``), which also ticks
    without ``purge``, as its ticks run ahead of the jobs' own clock, sends no job
    ahead (a ``lookahead`` of 0), and recovers at every tick (a ``recovery_interval``
    of 0: on a frozen clock, the interval would never pass).
    """

    def __init__(
        self,
        publisher: Publisher | None = None,
        name: str | None = None,
        *,
        judge_leases_at_once: bool = False,
        purge: bool = True,
        lookahead: timedelta | None = None,
        recovery_interval: float | None = None,
    ) -> None:
        self.publisher: Publisher = publisher or SQSPublisher()
        # A random part besides host and pid: two containers on one host's network,
        # each running its command as pid 1, were one heartbeat row.
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        #: How far ahead of now jobs are sent (None: ``SCHEDULER_LOOKAHEAD_SECONDS``).
        self.lookahead = lookahead
        #: Seconds between recoveries (None: ``SCHEDULER_RECOVERY_INTERVAL_SECONDS``).
        self.recovery_interval = (
            scheduler_settings.RECOVERY_INTERVAL_SECONDS
            if recovery_interval is None
            else recovery_interval
        )
        self._next_recovery = -math.inf
        self._next_purge = -math.inf if purge else math.inf
        self._stopping = False
        #: Queues SQS refused: until when their jobs wait, and what SQS said.
        self._refused_queues: dict[str, tuple[float, str]] = {}
        self._unrecorded = dispatching.NOTHING_UNRECORDED
        #: From when (monotonic) leases are judged: while PostgreSQL is out of this
        #: dispatcher's reach (inf), no worker can renew one either, so a live job's last
        #: heartbeat falls behind; once it is back, a worker has a full lease to beat again.
        #: A dispatcher just started cannot know whether it was: it waits a lease too.
        self._judge_leases_from = (
            -math.inf
            if judge_leases_at_once
            else time.monotonic() + scheduler_settings.LEASE_SECONDS
        )

    def run_once(self, *, now: datetime | None = None) -> TickResult:
        """One tick: recover lost jobs when their interval has passed, then send due jobs.

        ``now`` fixes the tick's time (tests); by default each batch reads the clock, so
        the delays of the last batch of a long tick are not computed from its start.
        """
        result = TickResult()
        if time.monotonic() >= self._next_recovery:
            self._recover(result, now=now or timezone.now())
            self._next_recovery = time.monotonic() + self.recovery_interval
        result.sent, result.failed = self._send_all(
            self._any_due,
            self._dispatch_batch,
            result,
            now=now,
        )
        # Said in every tick while its jobs wait, as an outage is, so the heartbeat shows it.
        result.errors.extend(
            f"sqs: queue {queue} refused, its jobs wait in PostgreSQL: {reason}"
            for queue, (_, reason) in sorted(self._refused_queues.items())
        )
        # The probe recorded an empty tick; a tick that did more records what it did, as
        # does the first after ticks whose heartbeat could not be written.
        if result != TickResult() or self._unrecorded != dispatching.NOTHING_UNRECORDED:
            self._record_heartbeat(result)
        log = logger.warning if result.errors or result.failed else logger.info
        log(
            "dispatch tick dispatcher=%s sent=%s failed=%s resent=%s "
            "leases_expired=%s expired=%s purged=%s errors=%s",
            self.name,
            result.sent,
            result.failed,
            result.resent,
            result.leases_expired,
            result.expired,
            result.purged,
            len(result.errors),
        )
        return result

    def _any_due(self, *, now: datetime) -> bool:
        """Whether a job is due, recording an empty tick in the same statement."""
        return dispatching.any_due(
            now=now, dispatcher=self.name, skip_queues=self._skipped(), within=self.lookahead
        )

    def _any_resend(self, *, now: datetime) -> bool:
        """Whether a job waits to be sent again."""
        return dispatching.any_resend(now=now, skip_queues=self._skipped())

    def _skipped(self) -> list[str]:
        """The queues whose jobs wait, SQS having refused them; the others' waits ended."""
        clock = time.monotonic()
        self._refused_queues = {
            queue: held for queue, held in self._refused_queues.items() if held[0] > clock
        }
        return sorted(self._refused_queues)

    def _lost_database(self, error: Exception) -> bool:
        """Whether ``error`` says PostgreSQL is out of reach; then no lease is judged until
        it is back, and a lease more.

        Only PostgreSQL taking nobody's writes does (a connection refused or dropped, a
        failover, a full disk): one statement's own failure (a protected row, a
        constraint, a statement timeout) would hold leases back for ever, and waiting
        does not mend it. A connection a failover left on a server that takes no writes
        is closed, for the next tick's to reach the new primary (kept, it would fail
        every tick until CONN_MAX_AGE).
        """
        if not isinstance(error, Error) or not refusals.unavailable(error):
            return False
        if refusals.on_a_reader(error):
            connection.close()
        self._judge_leases_from = math.inf
        return True

    def _failed(self, event: str, error: Exception) -> bool:
        """Log ``event``; whether ``error`` says PostgreSQL is out of reach (as
        :meth:`_lost_database`).

        Such an error comes back at every step of every tick until PostgreSQL is back:
        it is one line, where each step wrote a traceback, some 150 lines a tick for as
        long as the outage lasted. Any other error keeps its traceback.
        """
        if not self._lost_database(error):
            logger.exception("%s dispatcher=%s", event, self.name)
            return False
        said = refusals.first_line(error) or type(error).__name__
        logger.warning("%s dispatcher=%s database_unavailable=%r", event, self.name, said)
        return True

    def _reached_database(self) -> None:
        """PostgreSQL answered: if it had been out of reach, leases are judged a lease later."""
        if self._judge_leases_from == math.inf:
            lease = scheduler_settings.LEASE_SECONDS
            self._judge_leases_from = time.monotonic() + lease
            logger.warning(
                "database reached again dispatcher=%s leases_judged_in_seconds=%s", self.name, lease
            )

    def _recover(self, result: TickResult, *, now: datetime) -> None:
        """Re-send unclaimed jobs, retry dead workers' jobs, expire missed ones, purge hourly.

        A deploy that killed workers running hundreds of jobs, or an outage that let
        hundreds of deadlines pass, is handled in batches until none is left, for one
        dispatch interval at most, as due jobs are sent.
        """
        result.resent, _ = self._send_all(self._any_resend, self._resend_batch, result, now=now)
        try:
            until = time.monotonic() + scheduler_settings.DISPATCH_INTERVAL_SECONDS
            if time.monotonic() >= self._judge_leases_from:
                result.leases_expired = _in_batches(dispatching.expire_leases, now, until)
            result.expired = _in_batches(dispatching.expire_missed, now, until)
            # Due jobs of paused kinds out of the due index; resumed ones back in it.
            full = dispatching.HOLD_BATCH_SIZE
            result.held = _in_batches(dispatching.hold_paused, now, until, full=full)
            result.released = _in_batches(dispatching.release_unpaused, now, until, full=full)
            if time.monotonic() >= self._next_purge:
                # A purge that fails (a model of the user's protecting the jobs it
                # references) is tried again an hour later, not at every recovery.
                self._next_purge = time.monotonic() + _PURGE_EVERY_SECONDS

                def purge(*, now: datetime) -> int:
                    # Counted as it goes: a batch that fails (a lock timeout) after
                    # others committed leaves their figure.
                    purged = dispatching.purge_finished(now=now)
                    result.purged += purged
                    return purged

                _in_batches(purge, now, until, full=dispatching.PURGE_BATCH_SIZE)
                # Out of time with batches still full: the next recovery goes on.
                if result.purged and time.monotonic() >= until:
                    self._next_purge = -math.inf
        except Exception as error:
            # Whatever recovery hit (PostgreSQL out of reach, or a bug), due jobs still go.
            if self._failed("dispatcher recovery failed", error):
                result.outage = True
            result.errors.append(f"recovery: {type(error).__name__}: {error}")

    def run(self, *, max_ticks: int | None = None) -> None:
        """Tick every ``SCHEDULER_DISPATCH_INTERVAL_SECONDS`` until ``stop()``.

        Errors are logged and the loop goes on, backing off while PostgreSQL or SQS
        keeps failing.
        """
        check_at_start(process="dispatcher")
        ticks = 0
        consecutive_failures = 0
        while not self._stopping and (max_ticks is None or ticks < max_ticks):
            started = time.monotonic()
            close_old_connections()
            try:
                result = self.run_once()
                consecutive_failures = consecutive_failures + 1 if result.outage else 0
            except Exception:
                consecutive_failures += 1
                logger.exception("dispatcher tick crashed dispatcher=%s", self.name)
            ticks += 1
            interval = scheduler_settings.DISPATCH_INTERVAL_SECONDS
            pause = interval - (time.monotonic() - started)
            if consecutive_failures:
                # Back off while PostgreSQL or SQS is down, but briefly: the loop sleeps
                # through the end of the outage (OUTAGE_BACKOFF_INTERVALS).
                cap = min(
                    OUTAGE_BACKOFF_INTERVALS * interval, scheduler_settings.LOOKAHEAD_SECONDS / 2
                )
                pause = max(
                    pause, exponential_backoff(consecutive_failures, base=interval, cap=cap)
                )
            self._sleep(pause)

    def stop(self) -> None:
        """Ask ``run()`` to return after the current tick."""
        self._stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _send_all(
        self,
        waiting: Callable[..., bool],
        send_batch: Callable[..., BatchResult],
        result: TickResult,
        *,
        now: datetime | None,
    ) -> tuple[int, int]:
        """If anything is ``waiting``, send it in batches until none is left, or for one
        dispatch interval at most.

        The limit keeps a tick short on the worst day (a backlog of thousands, a slow
        SQS): beat runs its other entries and the dispatcher records its heartbeat
        between ticks, and the next tick, due at once, goes on where this one stopped.
        Returns how many jobs were sent and how many SQS refused.
        """
        batch_size = scheduler_settings.BATCH_SIZE
        until = time.monotonic() + scheduler_settings.DISPATCH_INTERVAL_SECONDS
        sent = failed = 0
        try:
            # Probing first keeps a tick with nothing to send out of any transaction.
            anything_waiting = waiting(now=now or timezone.now())
            self._reached_database()
            if not anything_waiting:
                return sent, failed
            while True:
                # The batch's delays count from here, the claim's time included: read
                # before now, never after, so no time before a send goes uncounted.
                as_of = time.monotonic()
                batch = send_batch(now=now or timezone.now(), as_of=as_of)
                # Their jobs wait a while, or every later batch would take them first.
                until_recheck = time.monotonic() + REFUSED_QUEUE_RECHECK_SECONDS
                self._refused_queues.update(
                    (queue, (until_recheck, reason))
                    for queue, reason in batch.refused_queues.items()
                )
                sent += batch.sent
                failed += batch.failed
                if batch.error and batch.error not in result.errors:
                    result.errors.append(batch.error)
                result.outage = result.outage or batch.outage
                # A short batch means nothing more is waiting.
                if batch.taken < batch_size or batch.outage or time.monotonic() >= until:
                    return sent, failed
        except Exception as error:
            # PostgreSQL out of reach, or a publisher that raised (a bug, or one of your
            # own): the batch rolled back or gave its copies back. The tick goes on to
            # its heartbeat, which shows it, and the loop backs off from either.
            result.errors.append(f"{waiting.__name__}: {type(error).__name__}: {error}")
            lost = self._failed("dispatcher batch failed", error)
            elsewhere = not isinstance(error, DatabaseError | InterfaceError)
            result.outage = result.outage or lost or elsewhere
            return sent, failed

    def _dispatch_batch(self, *, now: datetime, as_of: float) -> BatchResult:
        """Mark, send and (for what SQS refuses) put back one batch of due jobs, in one
        transaction, rolled back when SQS took none (an outage writes no row again).

        The locks last as long as the sends: a worker whose message arrives first waits
        for the commit. If the process dies after sending and before committing, the
        jobs are still scheduled and the messages' tokens never committed: each message
        is dropped by the worker once the locks are gone, and the next tick sends the
        jobs again. Nothing is lost, nothing runs twice. The delays count from ``as_of``
        (``time.monotonic()``, read as ``now`` was): the claim's time is taken off them.
        """
        with transaction.atomic():
            jobs = dispatching.dispatch_due(
                now=now,
                limit=scheduler_settings.BATCH_SIZE,
                skip_queues=self._skipped(),
                within=self.lookahead,
                idle_limit=CLAIM_IDLE_TIMEOUT,
            )
            if not jobs:
                return BatchResult(taken=0, sent=0, failed=0)
            published = self.publisher.publish(_messages(jobs, now=now, as_of=as_of))
            if not published.sent:
                # An outage, or refused queues: rolled back, no row is written again.
                transaction.set_rollback(True)
            elif len(published.sent) < len(jobs):
                sent = set(published.sent)
                dispatching.undispatch([job for job in jobs if job.job_id not in sent])
        return BatchResult.of(jobs, published)

    def _resend_batch(self, *, now: datetime, as_of: float) -> BatchResult:
        """Send one more copy, same token, of a batch of jobs nobody claimed in time.

        The copies are counted (and the next one scheduled) before they go out, so no
        lock is held while they do; those SQS refuses are given back.
        """
        jobs = dispatching.take_resends(
            now=now, limit=scheduler_settings.BATCH_SIZE, skip_queues=self._skipped()
        )
        if not jobs:
            return BatchResult(taken=0, sent=0, failed=0)
        try:
            published = self.publisher.publish(_messages(jobs, now=now, as_of=as_of))
        except BaseException:
            # Counted, never sent: each crash would double the wait for the next copy. So
            # would Ctrl-C again (a KeyboardInterrupt), which lands between statements.
            dispatching.untake_resends(jobs, now=now)
            raise
        if published.failed:
            dispatching.untake_resends(
                [job for job in jobs if job.job_id in published.failed], now=now
            )
        return BatchResult.of(jobs, published)

    def _record_heartbeat(self, result: TickResult) -> None:
        try:
            dispatching.record_tick(
                tick=dispatching.Tick(
                    dispatcher=self.name,
                    now=timezone.now(),
                    sent=result.sent,
                    recovered=result.resent + result.leases_expired,
                    errors=result.errors,
                    unrecorded=self._unrecorded,
                )
            )
        except (DatabaseError, InterfaceError) as error:
            # Kept for the next heartbeat written: an outage's errors are what the
            # alert on the errors counter is for.
            self._unrecorded = dispatching.TickTotals(
                sent=self._unrecorded.sent + result.sent,
                errors=self._unrecorded.errors + len(result.errors),
            )
            self._failed("dispatcher heartbeat failed", error)
        else:
            self._unrecorded = dispatching.NOTHING_UNRECORDED
