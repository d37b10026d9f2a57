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

Unlike Django, a connection that answered a query less than
:data:`RECENTLY_USED_SECONDS` ago is not checked again before the next task (as
HikariCP's ``aliveBypassWindowMs``): in a burst a worker process runs jobs back to
back, and a check before each is a round trip as long as the job's claim.
"""

import time
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init
from django.db import close_old_connections, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

#: A connection that answered a query this recently is trusted without a check.
RECENTLY_USED_SECONDS = 0.5

#: When each of this process's connections last answered a query (monotonic seconds).
_answered_at: "WeakKeyDictionary[BaseDatabaseWrapper, float]" = WeakKeyDictionary()


def _note_answer(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    result = execute(sql, params, many, context)
    _answered_at[context["connection"]] = time.monotonic()
    return result


def _is_eager(sender: Any) -> bool:
    # An eager call runs inside its caller's connection and transaction.
    return bool(getattr(getattr(sender, "request", None), "is_eager", False))


def prepare_connections(sender: Any = None, **kwargs: Any) -> None:
    """Before a task: :func:`refresh_connections`."""
    if not _is_eager(sender):
        refresh_connections()


def refresh_connections() -> None:
    """Close this process's obsolete or unusable connections, as Django does before a
    request, and spare a recently used one its health check: one that has sat unused
    (through a long job's body, say) is checked at its next query (``CONN_HEALTH_CHECKS``)
    and replaced if PostgreSQL dropped it meanwhile."""
    close_old_connections()
    now = time.monotonic()
    for conn in connections.all():
        if _note_answer not in conn.execute_wrappers:
            conn.execute_wrappers.append(_note_answer)
        answered_at = _answered_at.get(conn)
        if (
            conn.connection is not None
            and answered_at is not None
            and now - answered_at < RECENTLY_USED_SECONDS
        ):
            conn.health_check_done = True  # type: ignore[attr-defined]  # not in django-stubs


def close_obsolete_connections(sender: Any = None, **kwargs: Any) -> None:
    """After a task: close this process's connections that are obsolete or unusable."""
    if not _is_eager(sender):
        close_old_connections()


#: PostgreSQL's own keepalives on a worker's sessions (seconds idle, between probes,
#: probes). An atomic job's body holds its row locks in its transaction: with its
#: worker's host lost, PostgreSQL kept the session and the locks until its TCP keepalive
#: gave up, two hours by default (``tcp_keepalives_idle`` 7200), and the job's retry by
#: its lease waited on them as long. Now within about 25 s. The worker's own side of the
#: connection has libpq's keepalives (``project/settings.py``).
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
}


def _keep_alive(*, connection: BaseDatabaseWrapper, **_: Any) -> None:
    """On each new PostgreSQL connection: :data:`SERVER_KEEPALIVES`, for the session."""
    if connection.vendor != "postgresql":
        return
    settings = ", ".join("set_config(%s, %s, false)" for _ in SERVER_KEEPALIVES)
    values = [part for name, seconds in SERVER_KEEPALIVES.items() for part in (name, str(seconds))]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {settings}", values)


def keep_sessions_alive(on: bool = True) -> None:
    """Give this process's new connections :data:`SERVER_KEEPALIVES` (off: no more).

    A worker's, from ``worker_init`` (or a spawned pool process's ``worker_process_init``)
    on: one statement per connection, which a worker keeps from task to task; not the
    web's, which may open one per request.
    """
    if on:
        connection_created.connect(_keep_alive, weak=False, dispatch_uid=__name__)
    else:
        connection_created.disconnect(dispatch_uid=__name__)


task_prerun.connect(prepare_connections, weak=False)
task_postrun.connect(close_obsolete_connections, weak=False)
# worker_init reaches the pool processes a worker forks; one it spawns (macOS's default,
# worker_pool_start_method="spawn") is a new interpreter, which gets worker_process_init.
worker_init.connect(lambda **_: keep_sessions_alive(), weak=False)
worker_process_init.connect(lambda **_: keep_sessions_alive(), weak=False)
