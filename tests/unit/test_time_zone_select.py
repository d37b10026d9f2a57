"""The admin's time zone select: Django's select, its options written once per process."""

import re

import pytest
from django import forms
from django.utils.translation import gettext_lazy

from scheduler.admin import forms as time_zone_select
from scheduler.admin.forms import TimeZoneSelect

CHOICES = [
    (None, "---"),
    ("Europe/Paris", "Europe/Paris"),
    ('a"b<c>&d', "<b>'quoted' & more</b>"),
    ("UTC+1", "UTC+1"),  # a value that starts another's
    ("Group", [("America/New_York", "New York"), ("UTC", "UTC"), ("a&amp;b", "a&b")]),
    ("UTC", "again"),  # selected only once, the first
    ("Zulu", gettext_lazy("Zulu")),
]
_OPTION = re.compile(r'<option value="([^"]*)"( selected)?>([^<]*)</option>')
_GROUP = re.compile(r'<optgroup label="([^"]*)">')


def _read(html: str) -> tuple[list[tuple[str, bool, str]], list[str], str]:
    """The options (value, selected, label), the group labels and the select's own tag."""
    options = [(value, bool(selected), label) for value, selected, label in _OPTION.findall(html)]
    return options, _GROUP.findall(html), html.split(">", 1)[0]


@pytest.mark.parametrize(
    "value", ["Europe/Paris", 'a"b<c>&d', "UTC", "UTC+1", "a&b", "a&amp;b", "", None, "Mars"]
)
def test_it_writes_what_djangos_select_writes(value):
    attrs = {"id": "id_time_zone", "required": True}
    ours = TimeZoneSelect(choices=CHOICES).render("time_zone", value, attrs)
    django = forms.Select(choices=CHOICES).render("time_zone", value, attrs)
    assert _read(ours) == _read(django)
    assert len(_read(ours)[0]) == 9


def test_a_render_builds_no_option_after_the_first(monkeypatch):
    # About 600 zones: Django builds a context per option for its template to loop over,
    # 10 ms for this one field of a job page.
    widget = TimeZoneSelect(choices=CHOICES)
    widget.render("time_zone", "UTC")

    def built(*args: object) -> str:
        raise AssertionError("an option built again")

    monkeypatch.setattr(time_zone_select, "_option_html", built)
    html = widget.render("time_zone", "Zulu")
    assert '<option value="Zulu" selected>Zulu</option>' in html
