"""``django.tasks`` backends, for the ``TASKS`` setting.

``TASKS = {"default": {"BACKEND": "scheduler.backends.SchedulerBackend"}}``; the
implementation is in :mod:`scheduler.integrations.django_tasks`.
"""

from scheduler.integrations.django_tasks import SchedulerBackend

__all__ = ["SchedulerBackend"]
