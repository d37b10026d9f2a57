from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    """Test tasks written for django.tasks, run by the scheduler's backend."""

    name = "tests.tasksapp"
    label = "tasksapp"
