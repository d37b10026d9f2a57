"""The Celery application: `celery -A project worker` and `celery -A project beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Every task of the app can run the scheduler's jobs of its name.
app = Celery("project", task_cls="scheduler.worker.task:SchedulerTask")
# Every Celery option lives in Django settings under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
