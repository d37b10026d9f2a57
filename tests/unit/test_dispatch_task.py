"""The ``scheduler.dispatch`` task, which beat schedulers other than ours send."""

import threading
from dataclasses import asdict

from scheduler import tasks
from scheduler.dispatch.dispatcher import TickResult


class _SlowTick:
    """Stands in for the process's dispatcher: a tick that waits to be let go."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finish = threading.Event()
        self.ticks = 0

    def run_once(self) -> TickResult:
        self.ticks += 1
        self.started.set()
        assert self.finish.wait(10)
        return TickResult(sent=3)


def test_a_tick_while_another_runs_in_the_process_is_skipped(monkeypatch):
    # A threads, gevent or eventlet pool takes the next tick's message while the last
    # tick still runs: the dispatcher and its send pool are the process's one each.
    tick = _SlowTick()
    monkeypatch.setattr(tasks, "_dispatcher", lambda: tick)
    results: list[dict[str, object]] = []
    first = threading.Thread(target=lambda: results.append(tasks.dispatch()))
    first.start()
    try:
        assert tick.started.wait(10)
        assert tasks.dispatch() == asdict(TickResult())
        assert tick.ticks == 1
    finally:
        tick.finish.set()
        first.join(10)
    assert results[0]["sent"] == 3
    assert tasks.dispatch()["sent"] == 3
    assert tick.ticks == 2
