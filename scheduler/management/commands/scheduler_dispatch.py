"""``python manage.py scheduler_dispatch [--once [--judge-leases]]``: run the dispatcher
in this process."""

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection

from scheduler.dispatch.dispatcher import Dispatcher, check_at_start
from scheduler.dispatch.stopping import StopNowError, StopSignals
from scheduler.models import ScheduledJob


class Command(BaseCommand):
    help = (
        "Send nearly-due jobs from PostgreSQL to SQS, every "
        "SCHEDULER_DISPATCH_INTERVAL_SECONDS until stopped (or once with --once). "
        "Safe to run beside Celery beat and other dispatchers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run a single tick and exit.")
        parser.add_argument(
            "--judge-leases",
            action="store_true",
            help="With --once: also retry running jobs whose lease has expired, at once. "
            "Not within a lease of PostgreSQL coming back from an outage: their workers "
            "may not have renewed them yet, and each would run twice at once. (The loop "
            "judges none in its first lease, nor in a lease after an outage.)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["judge_leases"] and not options["once"]:
            raise CommandError("--judge-leases goes with --once")
        _refuse_a_database_never_migrated()
        # A single tick judges leases only when told: it cannot know of a recent outage.
        dispatcher = Dispatcher(judge_leases_at_once=options["judge_leases"])
        if options["once"]:
            check_at_start(process="dispatcher")  # as the loop does as it starts
            result = dispatcher.run_once()
            self.stdout.write(json.dumps(asdict(result)))
            if result.errors:
                raise SystemExit(1)
            return

        stop = StopSignals(dispatcher.stop)
        stop.install()
        try:
            with stop.cut_short_here():
                dispatcher.run()
        except StopNowError:
            stop.stop_now(process="dispatcher")
        if stop.received is not None:
            self.stderr.write(f"signal {stop.received}: stopped after the current tick")


def _refuse_a_database_never_migrated() -> None:
    """Stop at once on a database without the scheduler's tables (a wrong DATABASE_URL, or
    migrate never run), where the loop logged tracebacks at every tick for as long as it
    ran. A database out of reach is left to the loop, which waits for it to come back."""
    try:
        tables = connection.introspection.table_names()
    except DatabaseError:
        return
    if ScheduledJob._meta.db_table not in tables:
        name = connection.settings_dict["NAME"]
        raise CommandError(
            f"database {name!r} has no scheduler tables: run `python manage.py migrate`"
        )
