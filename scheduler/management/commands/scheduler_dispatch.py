"""``python manage.py scheduler_dispatch [--once]``: run the dispatcher in this process."""

import json
import signal
from dataclasses import asdict
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from scheduler.dispatch.dispatcher import Dispatcher


class Command(BaseCommand):
    help = (
        "Send nearly-due jobs from PostgreSQL to SQS, every "
        "SCHEDULER_DISPATCH_INTERVAL_SECONDS until stopped (or once with --once). "
        "Safe to run beside Celery beat and other dispatchers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="Run a single tick, judging leases at once, and exit (the loop judges "
            "none in its first lease).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # An operator's single tick has no first lease to wait out.
        dispatcher = Dispatcher(judge_leases_at_once=options["once"])
        if options["once"]:
            result = dispatcher.run_once()
            self.stdout.write(json.dumps(asdict(result)))
            if result.errors:
                raise SystemExit(1)
            return

        def stop(signum: int, _frame: FrameType | None) -> None:
            self.stderr.write(f"signal {signum}: stopping after the current tick")
            dispatcher.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        dispatcher.run()
