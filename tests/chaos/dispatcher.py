"""A dispatcher process whose publisher injects a fault: ``python -m tests.chaos.dispatcher``.

It runs the project's own :class:`~scheduler.dispatch.dispatcher.Dispatcher` loop with
the real SQS publisher wrapped in :class:`FaultyPublisher`, which also writes every
message it handed to SQS to a journal (``job_id token called_at returned_at`` per line)
for the test to count. Faults:

- ``none``: none (the journal only);
- ``triple``: every message is sent three times, as SQS's at-least-once delivery may;
- ``slow-sqs``: each send takes 0.5 s longer, as a slow SQS's would: one dispatcher's
  batches take long enough for the others' ticks to claim batches meanwhile;
- ``slow-commit``: the dispatch commits 2 s after SQS has the messages, so they can
  reach a worker first;
- ``hang-after-send``: after its first send the process prints ``hanging before
  commit`` and blocks with the transaction open, for the test to SIGKILL it.
"""

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import django

if TYPE_CHECKING:
    from scheduler.dispatch.publisher import OutgoingMessage, Publisher, PublishResult

FAULTS = ("none", "triple", "slow-sqs", "slow-commit", "hang-after-send")
SLOW_SQS_SECONDS = 0.5
SLOW_COMMIT_SECONDS = 2.0


class FaultyPublisher:
    """Wraps a real publisher: journals what it sent and injects ``fault``."""

    def __init__(self, inner: "Publisher", *, fault: str, journal: Path) -> None:
        self.inner = inner
        self.fault = fault
        self.journal = journal

    def publish(self, messages: "Sequence[OutgoingMessage]") -> "PublishResult":
        called_at = time.time()
        if self.fault == "slow-sqs":
            time.sleep(SLOW_SQS_SECONDS)
        result = self.inner.publish(messages)
        for _ in range(2 if self.fault == "triple" else 0):
            self.inner.publish(messages)
        if self.fault == "slow-commit":
            time.sleep(SLOW_COMMIT_SECONDS)
        sent = set(result.sent)
        with self.journal.open("a") as journal:
            journal.writelines(
                f"{m.job_id} {m.dispatch_token} {called_at:.6f} {time.time():.6f}\n"
                for m in messages
                if m.job_id in sent
            )
        if self.fault == "hang-after-send" and sent:
            print("hanging before commit", flush=True)
            while True:
                time.sleep(60)
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--journal", type=Path, required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_chaos")
    django.setup()
    from scheduler.dispatch.dispatcher import Dispatcher
    from scheduler.dispatch.publisher import SQSPublisher

    publisher = FaultyPublisher(SQSPublisher(), fault=args.fault, journal=args.journal)
    dispatcher = Dispatcher(publisher=publisher, name=args.name)

    def stop(signum: int, _frame: FrameType | None) -> None:
        print(f"signal {signum}: stopping", file=sys.stderr, flush=True)
        dispatcher.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    dispatcher.run()


if __name__ == "__main__":
    main()
