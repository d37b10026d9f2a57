"""docker-compose.yml: the five services, their health and order, and a valid file.

No Docker engine is needed: the file is parsed here and validated by the Compose
client's own `config -q`. A machine without any Compose client fails this test rather
than skipping it, so CI cannot silently stop validating the file.
"""

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.processes import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = {"web", "worker", "beat"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def compose_client() -> list[str]:
    """The Compose v2 plugin, or Debian's stand-alone docker-compose."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    pytest.fail(
        "no Docker Compose client to validate docker-compose.yml: install the docker "
        "compose plugin, or Debian's `apt-get install docker-compose`"
    )


def test_compose_config_is_valid() -> None:
    result = subprocess.run(
        [*compose_client(), "--file", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_five_services_built_or_pinned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"db", "sqs", *APP_SERVICES}
    assert services["db"]["image"] == "postgres:16"
    assert re.fullmatch(r"softwaremill/elasticmq-native:\d+\.\d+\.\d+", services["sqs"]["image"])
    for name in APP_SERVICES:
        assert services[name]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_database_keeps_its_data_in_a_named_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["db"]["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in volumes
    assert "pgdata" in compose["volumes"]


def test_services_start_after_their_dependencies_are_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("db", "sqs", "web"):
        assert services[name]["healthcheck"]["test"], name
    expected = {
        "web": {"db", "sqs"},
        "worker": {"db", "sqs", "web"},
        "beat": {"db", "sqs", "web"},
    }
    for name, dependencies in expected.items():
        depends_on = services[name]["depends_on"]
        assert set(depends_on) == dependencies, name
        for dependency, rule in depends_on.items():
            assert rule == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], dependency


def test_sqs_server_creates_the_queue_and_exposes_its_ui(compose: dict[str, Any]) -> None:
    sqs = compose["services"]["sqs"]
    assert "./elasticmq.conf:/opt/elasticmq.conf:ro" in sqs["volumes"]
    assert any(port.endswith(":9325") for port in sqs["ports"]), "the web UI port"
    queue = compose["x-app"]["environment"]["SCHEDULER_QUEUE_NAME"]
    config = (ROOT / "elasticmq.conf").read_text()
    assert re.search(rf"^\s*{queue} {{", config, re.MULTILINE)
    assert re.search(rf'deadLettersQueue {{\s*name = "{queue}-dlq"', config)
    assert re.search(rf"^\s*{queue}-dlq {{}}", config, re.MULTILINE)
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["SQS_ENDPOINT_URL"] == "http://sqs:9324"
        assert environment["DATABASE_URL"].endswith("@db:5432/longdelay")
