"""The operator's interface in the Django admin (registered on import, as Django expects).

``jobs`` is the ModelAdmin; ``forms``, ``changelist``, ``bulk``, ``monitoring`` and
``display`` are its parts; ``audit`` lists the audit trail.
"""

from scheduler.admin.audit import AuditEntryAdmin
from scheduler.admin.jobs import JobAttemptInline, ScheduledJobAdmin

__all__ = ["AuditEntryAdmin", "JobAttemptInline", "ScheduledJobAdmin"]
