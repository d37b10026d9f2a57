"""``python manage.py scheduler_create_queue``: create or update the SQS queue and its DLQ."""

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler.dispatch.queues import ensure_queue, refusal


class Command(BaseCommand):
    help = (
        "Create the scheduler's SQS queue (SCHEDULER_QUEUE_NAME) and its dead-letter queue "
        "<name>-dlq, or raise an existing queue's attributes to what jobs need, keeping "
        "longer ones and its own dead-letter queue. Says what it did; safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name",
            help="Celery queue name, as kombu names its SQS queue (reports.slow is "
            "reports-slow; default: SCHEDULER_QUEUE_NAME).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["name"] == "":
            raise CommandError("--name must not be empty (leave it out for SCHEDULER_QUEUE_NAME)")
        try:
            setup = ensure_queue(options["name"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        except (BotoCoreError, ClientError) as error:
            raise CommandError(refusal(error)) from None
        for line in setup.done:
            self.stdout.write(line)
        self.stdout.write(f"queue url={setup.url} arn={setup.arn}")
        self.stdout.write(f"dead-letter queue arn={setup.dlq_arn}")
        for warning in setup.warnings:
            self.stderr.write(self.style.WARNING(f"Warning: {warning}"))
