"""URL configuration: the admin is the operator's interface; Prometheus scrapes /metrics."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from scheduler.integrations import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics.view, name="scheduler-metrics"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
