from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "common"
    verbose_name = "Common"

    def ready(self) -> None:
        # One handler for every kind of long work: a starting worker resumes what each app registered.
        from common import work  # noqa: F401  (connects worker_ready)
