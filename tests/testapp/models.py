"""The chaos suite's evidence: what the test tasks did, written by the tasks themselves."""

from django.db import models


class Effect(models.Model):
    """One run of a test task's body, as its side effect.

    A plain task commits its row at once; an atomic task writes it in the job's
    transaction, so a run that does not succeed leaves none.
    """

    label = models.CharField(max_length=100)
    atomic = models.BooleanField()
    at = models.DateTimeField()
    pid = models.PositiveIntegerField()

    # Declared for mypy: the project settings that django-stubs reads omit the test app.
    objects: models.Manager["Effect"] = models.Manager()

    class Meta:
        indexes = [models.Index(fields=["label"], name="testapp_effect_label_idx")]

    def __str__(self) -> str:
        return f"{self.label} at {self.at:%H:%M:%S.%f}"
