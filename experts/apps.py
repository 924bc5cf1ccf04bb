from django.apps import AppConfig


class ExpertsConfig(AppConfig):
    name = "experts"
    verbose_name = "Experts"

    def ready(self) -> None:
        # Strata (annotation) queue 1:1:1 samples and read decisions through this desk, without importing experts.
        from annotation.strata import expert_desk_source
        from experts.desk import QueueDesk

        expert_desk_source(QueueDesk())
