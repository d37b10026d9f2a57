"""A Celery task of a module that Celery's ``imports`` (or ``include``) names, in no
installed app's ``tasks.py``: only tests/integration/test_schedule_api.py imports it."""

from celery import shared_task


@shared_task(name="imported.tally")
def tally(count: int) -> int:
    return count
