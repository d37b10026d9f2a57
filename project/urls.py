"""URL configuration: the admin is the operator's interface; Prometheus scrapes /metrics
and load balancers check /healthz (both answered by address: project.probes)."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from project import probes
from scheduler.integrations import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics.view, name="scheduler-metrics"),
    path("healthz", probes.health, name="health"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
