"""A worker process keeps its database connection from task to task, as Django does
from request to request.

Celery's Django fixup closes every connection before and after each task unless
``CELERY_DB_REUSE_MAX`` is set: each job then opens a new PostgreSQL connection, most
of the cost of its claim (a burst of jobs drains several times slower than the same
Celery messages). With ``CELERY_DB_REUSE_MAX`` set (the system check
``scheduler.W002`` says when it is not), these handlers do around each task what
Django does around a request: a connection past ``CONN_MAX_AGE``, left in a broken
state, or (with ``CONN_HEALTH_CHECKS``) failing its check at the next query is
replaced, so one terminated by the server costs no job.
"""

from typing import Any

from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections


def close_obsolete_connections(sender: Any = None, **kwargs: Any) -> None:
    """Close this process's connections that are obsolete or unusable (not eager calls,
    which run inside their caller's connection and transaction)."""
    request = getattr(sender, "request", None)
    if not getattr(request, "is_eager", False):
        close_old_connections()


task_prerun.connect(close_obsolete_connections, weak=False)
task_postrun.connect(close_obsolete_connections, weak=False)
