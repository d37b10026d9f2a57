"""Each real process, as it starts, compares its host's clock with PostgreSQL's and reads
its queues' attributes against what jobs need."""

import pytest

pytestmark = pytest.mark.timeout(90)


def test_worker_beat_and_dispatcher_check_their_clock_and_queue_at_start(
    worker, beat, dispatch_command, sqs_queue
):
    # The test's queue is made with SQS's defaults, as kombu makes one: no dead-letter
    # queue. Each process says so once, as it starts consuming or dispatching.
    short = (
        f"queue={sqs_queue.name} attribute=RedrivePolicy value=unset needs={sqs_queue.name}-dlq "
    )
    for process, name in ((worker, "worker"), (beat, "beat"), (dispatch_command, "dispatcher")):
        process.wait_for_output(f"clock offset process={name} seconds=", timeout=30)
        assert "this host's clock is" not in process.output()  # one host, one clock
        told = f"sqs queue falls short process={name} {short}"
        process.wait_for_output(told, timeout=30)
        assert process.output().count(told) == 1, process.output()[-4000:]
