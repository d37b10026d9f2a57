"""Template filters for the scheduler's admin pages (the helpers are in admin.display)."""

from django import template

from scheduler.admin import display

register = template.Library()
register.filter("duration", display.duration)
register.simple_tag(display.status_label, name="status_label")
