"""The demo app: a payment authorized now is captured 14 days later."""

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments (demo)"
    default_auto_field = "django.db.models.BigAutoField"
