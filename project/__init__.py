"""Project wiring: settings, the Celery app, URLs and WSGI."""

from project.celery import app as celery_app

__all__ = ("celery_app",)
