"""A coroutine function called from a worker's thread, as ``django.tasks`` calls one, that
ends with the call.

``async_to_sync`` runs the coroutine on an event loop of another thread while the
calling thread waits, running the coroutine's thread-sensitive sync calls. An exception
raised into the waiting thread (Celery's soft time limit) ended the call but not the
coroutine: it ran on, its effects done after its attempt was recorded, and its retry
overlapped it. Here the coroutine is cancelled, and waited for, before the exception
goes on: one that ignores its cancellation holds the thread until it ends, or until the
hard time limit ends its process.

And the reverse: a database write that sync code must make when called from a thread
running an event loop (an async view calling ``apply_async``), where Django refuses it.
"""

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.sync import AsyncToSync, async_to_sync
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections

T = TypeVar("T")


class _Running:
    """The coroutine's task, once started, and what the calling thread must run for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.interrupted = False
        self.task: asyncio.Task[Any] | None = None
        self.executor: CurrentThreadExecutor | None = None
        self.ended: Future[None] = Future()


def call_coroutine_function(
    function: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any
) -> Any:
    """``async_to_sync(function)(*args, **kwargs)``; when the calling thread is
    interrupted, the coroutine is cancelled and ended before the exception is raised."""
    running = _Running()

    async def run() -> Any:
        with running.lock:
            if running.interrupted:  # before it started: it does not
                raise asyncio.CancelledError
            running.task = asyncio.current_task()
            # This call's own (the loop's may be an outer call's, whose loop it runs on).
            running.executor = getattr(AsyncToSync.executors, "current", None)
        try:
            return await function(*args, **kwargs)
        finally:
            running.ended.set_result(None)

    try:
        return async_to_sync(run)()
    except BaseException:
        with running.lock:
            running.interrupted = True
        if running.task is not None and not running.ended.done():
            running.task.get_loop().call_soon_threadsafe(running.task.cancel)
            if running.executor is not None:
                # Its sync calls run in this thread, as while it was waited for.
                running.executor.run_until_future(running.ended)
            running.ended.result()
        raise


def outside_event_loop(function: Callable[[], T]) -> T:
    """``function()``; where Django refuses its database queries (a thread running an
    event loop: SynchronousOnlyOperation, raised before any query), in a short-lived
    thread the caller waits for, whose database connections are closed after.

    The caller's event loop waits as long as the call takes, as for a message Celery
    sends. Where Django allows them (``DJANGO_ALLOW_ASYNC_UNSAFE``), the queries run in
    the caller's thread, and join its transaction.
    """
    try:
        return function()
    except SynchronousOnlyOperation:
        pass

    def call() -> T:
        try:
            return function()
        finally:
            connections.close_all()  # this thread's only, at once rather than when collected

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scheduler-sync") as thread:
        return thread.submit(contextvars.copy_context().run, call).result()
