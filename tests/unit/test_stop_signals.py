"""A dispatcher's stop signals: the first lets the tick finish, Ctrl-C again cuts it short."""

import signal

import pytest

from scheduler.dispatch import stopping
from scheduler.dispatch.stopping import StopSignals


def test_the_first_stop_signal_lets_the_tick_finish_and_a_second_sigint_cuts_it_short():
    # Ctrl-C again did nothing: a tick stuck on PostgreSQL or SQS could only be killed.
    stops: list[bool] = []
    stop = StopSignals(lambda: stops.append(True))
    with stop.cut_short_here():
        stop._handle(signal.SIGINT, None)
        assert (stop.received, stops) == (signal.SIGINT, [True])
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)
        stop._handle(signal.SIGINT, None)  # once: the clean-up it lands in goes on
    assert stop.forced == signal.SIGINT
    assert stops == [True]


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT])
def test_a_second_sigterm_or_one_out_of_the_tick_waits_for_the_tick(first):
    # An orchestrator's SIGTERM (sent again by a supervisor) means the same stop; out of
    # the tick (the schedule's save as beat exits), nothing is there to cut short.
    stop = StopSignals(lambda: None)
    stop._handle(first, None)
    stop._handle(signal.SIGINT, None)
    with stop.cut_short_here():
        stop._handle(signal.SIGTERM, None)
    assert stop.forced is None


def test_a_tick_cut_short_exits_130_at_once_its_connections_closed(monkeypatch, caplog):
    # It raised SystemExit, and Python's exit then waited for the SQS send threads,
    # retrying a stuck batch for up to half a minute; a third Ctrl-C did nothing.
    closed: list[bool] = []
    ended: list[str] = []
    monkeypatch.setattr(stopping.connections, "close_all", lambda: closed.append(True))
    monkeypatch.setattr(stopping.atexit, "_run_exitfuncs", lambda: ended.append("atexit"))
    monkeypatch.setattr(stopping.os, "_exit", lambda code: ended.append(f"exit {code}"))
    stop = StopSignals(lambda: None)
    with stop.cut_short_here():
        stop._handle(signal.SIGINT, None)
        with pytest.raises(stopping.StopNowError):
            stop._handle(signal.SIGINT, None)
    stop.stop_now(process="dispatcher")
    assert closed == [True]
    # Its exit handlers (logging's flush, beat's pidfile) run; the send threads are left.
    assert ended == ["atexit", "exit 130"]
    assert "dispatcher stopping now signal=2 tick=cut short" in caplog.text


def test_a_forked_beat_cut_short_runs_not_its_parents_exit_functions(monkeypatch):
    # A worker's embedded beat (`worker -B`) is a forked child, whose exit functions are
    # the worker's copies: running them removed the running worker's pidfile.
    ended: list[str] = []
    monkeypatch.setattr(stopping.connections, "close_all", lambda: None)
    monkeypatch.setattr(stopping.atexit, "_run_exitfuncs", lambda: ended.append("atexit"))
    monkeypatch.setattr(stopping.logging, "shutdown", lambda: ended.append("logging"))
    monkeypatch.setattr(stopping.os, "_exit", lambda code: ended.append(f"exit {code}"))
    monkeypatch.setattr(stopping, "_forked", True)  # as os.register_at_fork sets it
    stop = StopSignals(lambda: None)
    stop.forced = signal.SIGINT
    stop.stop_now(process="beat")
    assert ended == ["logging", "exit 130"]
