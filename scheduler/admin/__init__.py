"""The operator's interface in the Django admin (registered on import, as Django expects).

``jobs`` is the ModelAdmin; ``forms``, ``changelist``, ``bulk``, ``monitoring`` and
``display`` are its parts.
"""

from scheduler.admin.jobs import JobAttemptInline, ScheduledJobAdmin

__all__ = ["JobAttemptInline", "ScheduledJobAdmin"]
