"""Evidence tables the tests read: database effects of jobs, and Celery signals seen."""

from django.db import models


class Effect(models.Model):
    """A row a task body writes: what an atomic task must write once or not at all."""

    label = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    objects: "models.Manager[Effect]" = models.Manager()


class SignalRecord(models.Model):
    """A Celery signal a worker process sent for a task that asks to be observed."""

    signal = models.CharField(max_length=40)
    task_name = models.CharField(max_length=255)
    task_id = models.CharField(max_length=255, blank=True, default="")
    detail = models.TextField(blank=True, default="")

    objects: "models.Manager[SignalRecord]" = models.Manager()
