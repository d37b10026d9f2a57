"""README.md's alert rules through promtool (Debian's `prometheus` package): valid, and each
alert fires, or stays quiet, as the scenarios of tests/readme_alerts_test.yml say.

The rules are taken from README.md, not kept in a file of their own. A machine without
promtool fails these tests rather than skipping them, so CI cannot silently stop checking
the rules. That the metrics and labels they read are those /metrics exports is
tests/integration/test_metrics.py's (it needs PostgreSQL).
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.readme_alerts import RULES_FILE, SCENARIOS, alerts, rules_text


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail(
            "no promtool to test README.md's alert rules: install Debian's prometheus "
            "package (`apt-get install --no-install-recommends prometheus`, as .ci/run does)"
        )
    return found


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A directory holding README's rules as the scenarios name them, and the scenarios."""
    (tmp_path / RULES_FILE).write_text(rules_text())
    shutil.copy(SCENARIOS, tmp_path)
    return tmp_path


def run_promtool(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_are_valid(rules):
    run_promtool("check", "rules", RULES_FILE, cwd=rules)


def test_each_alert_fires_or_stays_quiet_as_its_scenarios_say(rules):
    run_promtool("test", "rules", SCENARIOS.name, cwd=rules)


def test_each_alert_has_a_scenario_where_it_fires_and_one_where_it_stays_quiet():
    checks = [
        check
        for scenario in yaml.safe_load(SCENARIOS.read_text())["tests"]
        for check in scenario["alert_rule_test"]
    ]
    fires = {check["alertname"] for check in checks if check.get("exp_alerts")}
    quiet = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    assert set(alerts()) - fires == set(), "alerts no scenario makes fire"
    assert set(alerts()) - quiet == set(), "alerts no scenario keeps quiet"
    assert (fires | quiet) - set(alerts()) == set(), "scenarios of alerts README has not"
