"""Long-delay jobs for Django + Celery on Amazon SQS.

``schedule_at``, ``schedule_in``, ``schedule_many`` (with ``JobSpec``), ``cancel`` and
``reschedule`` are the public API.
They are imported lazily so that ``import scheduler`` works before Django is set up.
"""

from typing import TYPE_CHECKING, Any

#: The distribution's version (``long-delay-jobs``); see CHANGELOG.md.
__version__ = "0.2.0"

if TYPE_CHECKING:
    from scheduler.services import (
        JobSpec,
        cancel,
        reschedule,
        schedule_at,
        schedule_in,
        schedule_many,
    )

__all__ = ["JobSpec", "cancel", "reschedule", "schedule_at", "schedule_in", "schedule_many"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from scheduler import services

        return getattr(services, name)
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
