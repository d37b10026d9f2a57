"""Each real process compares its host's clock with PostgreSQL's when it starts."""

import pytest

pytestmark = pytest.mark.timeout(90)


def test_worker_beat_and_dispatcher_check_their_clock_at_start(worker, beat, dispatch_command):
    for process, name in ((worker, "worker"), (beat, "beat"), (dispatch_command, "dispatcher")):
        process.wait_for_output(f"clock offset process={name} seconds=", timeout=30)
        assert "this host's clock is" not in process.output()  # one host, one clock
