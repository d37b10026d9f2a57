"""README.md's Prometheus alert rules ("Alerts worth setting"), read from README.md, the one
copy a newcomer takes them from: for the tests that run them through promtool
(tests/unit/test_readme_alerts.py) and check what they read against a real /metrics
(tests/integration/test_metrics.py)."""

import re
from dataclasses import dataclass
from typing import Any

import yaml

from tests.processes import ROOT

README = ROOT / "README.md"
#: promtool's scenarios for the rules, which they read from RULES_FILE beside them.
SCENARIOS = ROOT / "tests" / "readme_alerts_test.yml"
RULES_FILE = "readme-alerts.yml"

_RULES_BLOCK = re.compile(r"^```yaml\n(groups:\n.*?)^```$", re.MULTILINE | re.DOTALL)
_METRIC = re.compile(r"\b(scheduler_\w+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
# An aggregation's labels, written before its parenthesis: `sum by (task) (...)`.
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)\s*\(")


def rules_text() -> str:
    """The rules' YAML block in README.md."""
    blocks = _RULES_BLOCK.findall(README.read_text())
    assert len(blocks) == 1, f"README.md has {len(blocks)} ```yaml blocks of rules (groups:)"
    text: str = blocks[0]
    return text


def alerts() -> dict[str, str]:
    """Each alert's PromQL expression, by the alert's name."""
    groups: list[dict[str, Any]] = yaml.safe_load(rules_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


@dataclass(frozen=True)
class Selector:
    """A scheduler metric an expression reads, with the labels it matches or groups on."""

    metric: str
    labels: frozenset[str]
    #: (label, operator, value as written in PromQL's quotes)
    matchers: tuple[tuple[str, str, str], ...]


def selectors(expr: str) -> list[Selector]:
    """The `scheduler_*` metrics ``expr`` reads: each with its matchers' labels and those of
    the aggregations around it."""
    groupings = list(_GROUPING.finditer(expr))
    # A grouping written after its aggregation (`sum(...) by (task)`) would be missed.
    assert len(groupings) == len(re.findall(r"\b(?:by|without)\b", expr)), expr
    around = [
        (range(match.end(), _closing(expr, match.end() - 1)), _names(match[1]))
        for match in groupings
    ]
    found = []
    for match in _METRIC.finditer(expr):
        matchers = tuple(_MATCHER.findall(match[2] or ""))
        labels = {label for label, _, _ in matchers}
        for span, grouped in around:
            if match.start() in span:
                labels |= grouped
        found.append(Selector(match[1], frozenset(labels), matchers))
    return found


def _names(listed: str) -> set[str]:
    return {name.strip() for name in listed.split(",") if name.strip()}


def _closing(text: str, opening: int) -> int:
    """The index of the parenthesis closing the one at ``opening``."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise AssertionError(f"unbalanced parentheses: {text}")
