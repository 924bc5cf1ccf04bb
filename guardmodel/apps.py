from django.apps import AppConfig


class GuardmodelConfig(AppConfig):
    name = "guardmodel"
    verbose_name = "Guard model"
