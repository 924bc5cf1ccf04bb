from django.apps import AppConfig


class JuryConfig(AppConfig):
    name = "jury"
    verbose_name = "Jury"

    def ready(self) -> None:
        # The layers below ask, without importing the jury, which template it asks with and who uses a template.
        from annotation.strata import jury_version_source
        from guardmodel.prompts import template_users_source
        from jury.selectors import sitting_prompt_version, template_jurors

        jury_version_source(sitting_prompt_version)
        template_users_source(template_jurors)
