"""``python manage.py scheduler_create_queue``: create or update the SQS queue and its DLQ."""

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler.dispatch.queues import ensure_queue, refusal


class Command(BaseCommand):
    help = (
        "Create the scheduler's SQS queue (SCHEDULER_QUEUE_NAME) and its dead-letter queue "
        "<name>-dlq, or bring their attributes up to date. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", help="Queue name (default: SCHEDULER_QUEUE_NAME).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["name"] == "":
            raise CommandError("--name must not be empty (leave it out for SCHEDULER_QUEUE_NAME)")
        try:
            setup = ensure_queue(options["name"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        except (BotoCoreError, ClientError) as error:
            raise CommandError(refusal(error)) from None
        self.stdout.write(f"queue url={setup.url} arn={setup.arn}")
        self.stdout.write(f"dead-letter queue url={setup.dlq_url} arn={setup.dlq_arn}")
        for key, value in sorted(setup.attributes.items()):
            self.stdout.write(f"  {key}={value}")
