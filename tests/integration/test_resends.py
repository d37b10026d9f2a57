"""Bounded re-sends: an unclaimed job is sent again with the same token, each wait doubling."""

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from scheduler import cancel, reschedule
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.publisher import PublishResult
from scheduler.models import ScheduledJob
from scheduler.services import run_now, running
from scheduler.services.dispatching import take_resends, untake_resends
from scheduler.testing import InMemoryPublisher
from tests.conftest import job_row_held_elsewhere
from tests.factories import make_jobs

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
STALE = 60
TICK = timedelta(seconds=5)


@pytest.fixture(autouse=True)
def _stale_after(settings):
    settings.SCHEDULER_STALE_AFTER_SECONDS = STALE
    settings.SCHEDULER_RECOVERY_INTERVAL_SECONDS = 5


@pytest.fixture
def clock():
    """Time frozen at T0, moved by the test."""
    with freeze_time(T0) as frozen:
        yield frozen


@pytest.fixture
def publisher():
    return InMemoryPublisher()


@pytest.fixture
def dispatcher(publisher):
    return Dispatcher(publisher=publisher)


def _dispatched(dispatcher, *run_ats):
    """Jobs due at ``run_ats``, sent by one tick at T0; nobody claims them."""
    jobs = make_jobs(list(run_ats))
    dispatcher.run_once()
    return [ScheduledJob.objects.get(pk=job.pk) for job in jobs]


def _tick_through(clock, dispatcher, until):
    """Tick every five seconds until ``until`` (workers are away: nothing is claimed)."""
    while timezone.now() + TICK <= until:
        clock.tick(TICK)
        dispatcher.run_once()


def test_an_unclaimed_job_is_resent_with_its_token_each_wait_twice_the_last(
    clock, dispatcher, publisher
):
    [job] = _dispatched(dispatcher, T0 + timedelta(seconds=10))
    sent_at = [T0]
    while timezone.now() < T0 + timedelta(hours=1):
        before = len(publisher.published)
        clock.tick(TICK)
        dispatcher.run_once()
        if len(publisher.published) > before:
            sent_at.append(timezone.now())

    assert {message.dispatch_token for message in publisher.published} == {str(job.dispatch_token)}
    assert {message.job_id for message in publisher.published} == {job.pk}
    # The first re-send STALE after run_at, then each wait twice the last (ticks are 5 s).
    waits = [
        (b - a).total_seconds()
        for a, b in zip([job.run_at, *sent_at[1:-1]], sent_at[1:], strict=True)
    ]
    for number, wait in enumerate(waits):
        assert STALE * 2**number <= wait < STALE * 2**number + TICK.total_seconds(), waits
    # An hour away is 60 stale periods: log2(60) + 1 copies, not 60.
    outage = (T0 + timedelta(hours=1) - job.run_at).total_seconds()
    assert len(sent_at) == 1 + math.floor(math.log2(outage / STALE + 1))
    token = job.dispatch_token
    job.refresh_from_db()
    assert (job.status, job.dispatch_token, job.sends) == ("enqueued", token, len(sent_at))


def test_when_workers_return_each_job_runs_once_whatever_copy_arrives_first(
    clock, dispatcher, publisher
):
    jobs = _dispatched(dispatcher, *[T0 - timedelta(seconds=30)] * 40)
    _tick_through(clock, dispatcher, T0 + timedelta(seconds=10 * STALE))

    copies = Counter(message.job_id for message in publisher.published)
    # Ten stale periods away: 1 + log2(11) copies of each job.
    assert set(copies.values()) == {4}
    assert set(copies) == {job.pk for job in jobs}
    outcomes = Counter()
    # The copies arrive in any order; the last ones first.
    for message in reversed(publisher.published):
        claimed = running.claim(
            job_id=message.job_id,
            token=message.dispatch_token,
            task_name=message.task_name,
            worker="w",
        )
        outcomes[type(claimed).__name__] += 1
    assert outcomes == {"Claim": 40, "Refusal": 40 * 3}
    assert ScheduledJob.objects.filter(status="running", attempts=1).count() == 40


def test_a_job_dispatched_late_waits_a_full_stale_period_before_its_first_resend(
    clock, dispatcher, publisher
):
    _dispatched(dispatcher, T0 - timedelta(hours=1))  # the dispatchers were down for an hour
    _tick_through(clock, dispatcher, T0 + timedelta(seconds=STALE - 1))
    assert len(publisher.published) == 1
    _tick_through(clock, dispatcher, T0 + timedelta(seconds=STALE + 5))
    assert len(publisher.published) == 2


def test_a_resend_asked_for_now_goes_out_at_the_next_recovery_with_the_same_token(
    clock, dispatcher, publisher
):
    [job] = _dispatched(dispatcher, T0 + timedelta(seconds=60))
    # An operator's "re-send" (the ops service) sets resend_at to now.
    ScheduledJob.objects.filter(pk=job.pk).update(resend_at=T0)
    clock.tick(TICK)
    dispatcher.run_once()
    first, again = publisher.published
    assert again.dispatch_token == first.dispatch_token
    assert again.eta == first.eta
    assert again.delay_seconds == 60 - 5 - 2  # still held back until run_at - lead


class DownPublisher:
    """SQS is unreachable."""

    def __init__(self) -> None:
        self.attempts = 0

    def publish(self, messages):
        self.attempts += len(messages)
        return PublishResult(
            failed={m.job_id: "down" for m in messages}, error="EndpointConnectionError: down"
        )


def test_a_resend_that_fails_is_tried_again_at_the_next_recovery(clock, dispatcher, publisher):
    [job] = _dispatched(dispatcher, T0)
    clock.tick(STALE + 1)
    down = DownPublisher()
    result = Dispatcher(publisher=down).run_once()
    assert (down.attempts, result.resent) == (1, 0)
    assert result.errors
    job.refresh_from_db()
    # The copy SQS did not take is given back, to be tried at the next recovery.
    assert (job.sends, job.resend_at) == (1, T0 + timedelta(seconds=STALE + 1))
    result = Dispatcher(publisher=publisher).run_once()
    assert result.resent == 1
    assert [m.dispatch_token for m in publisher.published] == [str(job.dispatch_token)] * 2


class InterruptedPublisher:
    """Ctrl-C again lands while the copies are on their way (SQS not answering)."""

    def publish(self, messages):
        raise KeyboardInterrupt


def test_a_resend_cut_short_by_ctrl_c_is_given_back_for_the_next_recovery(
    clock, dispatcher, publisher
):
    # The copy was counted, and the next one put off twice as long, before it went out:
    # a tick cut short there (a KeyboardInterrupt, not an Exception) kept the count, and
    # the job, its message lost, waited a whole extra stale period for a copy.
    [job] = _dispatched(dispatcher, T0)
    clock.tick(STALE + 1)
    with pytest.raises(KeyboardInterrupt):
        Dispatcher(publisher=InterruptedPublisher()).run_once()
    job.refresh_from_db()
    assert (job.sends, job.resend_at) == (1, T0 + timedelta(seconds=STALE + 1))


def test_claimed_cancelled_and_rescheduled_jobs_are_never_resent(
    clock, dispatcher, publisher, settings
):
    settings.SCHEDULER_LEASE_SECONDS = 36000  # the claimed job stays running throughout
    claimed, cancelled, moved = _dispatched(dispatcher, T0, T0, T0)
    running.claim(
        job_id=claimed.pk, token=claimed.dispatch_token, task_name="testapp.noop", worker="w"
    )
    cancel(cancelled)
    reschedule(moved, T0 + timedelta(days=1))
    _tick_through(clock, dispatcher, T0 + timedelta(seconds=20 * STALE))
    assert len(publisher.published) == 3
    assert ScheduledJob.objects.get(pk=moved.pk).sends == 0


def test_the_job_waiting_longest_for_a_resend_is_taken_first(clock, dispatcher):
    # Under a backlog each batch takes the oldest resends first, so none waits forever.
    later, earlier = _dispatched(dispatcher, T0 + timedelta(seconds=10), T0)
    assert later.resend_at > earlier.resend_at  # though made first
    clock.tick(STALE + 20)
    [taken] = take_resends(now=timezone.now(), limit=1)
    assert taken.job_id == earlier.pk


def test_giving_back_a_resend_after_a_worker_claimed_the_job_leaves_it_running(clock, dispatcher):
    # SQS refused the copy, but the first message ran the job meanwhile: giving the copy
    # back must not make a running job enqueued again (it would run twice).
    [job] = _dispatched(dispatcher, T0)
    clock.tick(STALE + 1)
    [taken] = take_resends(now=timezone.now(), limit=10)
    claimed = running.claim(
        job_id=job.pk, token=job.dispatch_token, task_name=job.task_name, worker="w"
    )
    assert isinstance(claimed, running.Claim)
    assert untake_resends([taken], now=timezone.now()) == 0
    job.refresh_from_db()
    assert (job.status, job.sends) == ("running", 2)


def test_giving_back_a_resend_after_the_job_was_sent_anew_leaves_the_new_dispatch(
    clock, dispatcher
):
    # SQS refused the copy, but meanwhile an operator's "run now" had another dispatcher
    # send the job anew: the give-back rewrote the new dispatch's count of copies and
    # its next re-send with the old token's.
    [job] = _dispatched(dispatcher, T0)
    clock.tick(STALE + 1)
    [taken] = take_resends(now=timezone.now(), limit=10)
    run_now(job)
    dispatcher.run_once()
    anew = ScheduledJob.objects.get(pk=job.pk)
    assert (anew.status, anew.sends) == ("enqueued", 1)
    assert str(anew.dispatch_token) != taken.dispatch_token
    assert untake_resends([taken], now=timezone.now()) == 0
    job.refresh_from_db()
    assert (job.dispatch_token, job.sends, job.resend_at) == (
        anew.dispatch_token,
        1,
        anew.resend_at,
    )


@pytest.mark.django_db(transaction=True)  # the row lock is another connection's
def test_a_resend_whose_row_another_transaction_holds_is_skipped_not_waited_for(clock, dispatcher):
    # A worker's claim holds a row for a moment: a recovery that waited for it would
    # hold back the copies of every other unclaimed job.
    held, free = _dispatched(dispatcher, T0, T0)
    clock.tick(STALE + 1)
    with job_row_held_elsewhere(held.pk):
        taken = take_resends(now=timezone.now(), limit=10)
    assert [job.job_id for job in taken] == [free.pk]
