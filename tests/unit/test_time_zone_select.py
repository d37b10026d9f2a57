"""The admin's time zone select: Django's select, its options written once per process."""

import re

import pytest
from django import forms

from scheduler.admin.forms import TimeZoneSelect

CHOICES = [
    ("Europe/Paris", "Europe/Paris"),
    ('a"b<c>&d', "<b>'quoted' & more</b>"),
    ("Group", [("America/New_York", "New York"), ("UTC", "UTC")]),
    ("Zulu", "Zulu"),
]
_OPTION = re.compile(r'<option value="([^"]*)"( selected)?>([^<]*)</option>')
_GROUP = re.compile(r'<optgroup label="([^"]*)">')


def _read(html: str) -> tuple[list[tuple[str, bool, str]], list[str], str]:
    """The options (value, selected, label), the group labels and the select's own tag."""
    options = [(value, bool(selected), label) for value, selected, label in _OPTION.findall(html)]
    return options, _GROUP.findall(html), html.split(">", 1)[0]


@pytest.mark.parametrize("value", ["Europe/Paris", 'a"b<c>&d', "UTC", "", None, "Mars"])
def test_it_writes_what_djangos_select_writes(value):
    attrs = {"id": "id_time_zone", "required": True}
    ours = TimeZoneSelect(choices=CHOICES).render("time_zone", value, attrs)
    django = forms.Select(choices=CHOICES).render("time_zone", value, attrs)
    assert _read(ours) == _read(django)
    assert len(_read(ours)[0]) == 5


def test_a_render_builds_no_option_after_the_first(monkeypatch):
    # About 600 zones: Django builds each option's context and includes a template per
    # option, most of a job page's time (10 ms for this one field).
    widget = TimeZoneSelect(choices=CHOICES)
    widget.render("time_zone", "UTC")
    built = []
    create_option = forms.Select.create_option
    monkeypatch.setattr(
        forms.Select, "create_option", lambda *a, **k: built.append(1) or create_option(*a, **k)
    )
    html = widget.render("time_zone", "Zulu")
    assert '<option value="Zulu" selected>Zulu</option>' in html
    assert built == []
