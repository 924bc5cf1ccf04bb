"""Prompt templates: the built-in ones and those users supply, resolved by version for every model that judges."""

from __future__ import annotations

from collections.abc import Callable

from common.errors import ApplicationError
from guardmodel.models import GuardCheckpoint, PromptTemplate
from qta import protocol


class TemplateError(ApplicationError):
    """A template that cannot be made or found; `field` names the value at fault."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def template_for(version: str) -> protocol.Template:
    """The template a checkpoint, juror or oracle names by version: a built-in one or a stored one."""
    if version in protocol.BUILTIN_TEMPLATES:
        return protocol.BUILTIN_TEMPLATES[version]
    row = PromptTemplate.objects.filter(version=version).first()
    if row is None:
        known = ", ".join(version_choices_values())
        raise TemplateError(f"prompt_version: no template {version!r}; known: {known}", "prompt_version")
    return as_template(row)


TemplateUsers = Callable[[str], list[str]]
_template_users: list[TemplateUsers] = []


def template_users_source(source: TemplateUsers) -> None:
    """Add a reader of who else asks with a template (the jury: its jurors); called when that app loads."""
    _template_users.append(source)


def template_users(version: str) -> list[str]:
    """Who asks with this template: checkpoints, and what other apps registered (jurors)."""
    names = [f"checkpoint {c}" for c in GuardCheckpoint.objects.filter(prompt_version=version)]
    for source in _template_users:
        names += source(version)
    return names


def as_template(row: PromptTemplate) -> protocol.Template:
    return protocol.Template(row.name, row.system_prompt, row.variant, row.layout)  # type: ignore[arg-type]


def version_choices() -> list[tuple[str, str]]:
    """(version, label) for forms: the built-in templates first, then the stored ones, newest first."""
    choices = [
        (protocol.PROMPT_VERSION, f"{protocol.PROMPT_VERSION} — built-in, question + reasoning + answer"),
        (protocol.QA_PROMPT_VERSION, f"{protocol.QA_PROMPT_VERSION} — built-in, question + answer baseline"),
    ]
    for row in PromptTemplate.objects.order_by("-created_at"):
        source = f", from {row.source_file}" if row.source_file else ""
        choices.append((row.version, f"{row.version} — {row.get_layout_display()} layout{source}"))
    return choices


def version_choices_values() -> list[str]:
    return [value for value, _ in version_choices()]


def prompt_template_check(
    *,
    name: str,
    system_prompt: str | bytes,
    variant: str = "qta",
    layout: str = "tagged",
    source_file: str = "",
) -> protocol.Template:
    """The template these values make, or TemplateError naming the field (nothing stored)."""
    where = f"{source_file}: " if source_file else ""
    if isinstance(system_prompt, bytes):
        try:
            system_prompt = system_prompt.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TemplateError(
                f"{where}system_prompt: not UTF-8 text (byte {exc.start})", "system_prompt"
            ) from None
    if "\x00" in system_prompt:
        raise TemplateError(f"{where}system_prompt: contains a NUL character", "system_prompt")
    if len(system_prompt) > 100_000:
        raise TemplateError(
            f"{where}system_prompt: {len(system_prompt):,} characters, over the 100,000 limit",
            "system_prompt",
        )
    # Line endings are not content: a file saved on Windows gives the same version.
    system_prompt = system_prompt.replace("\r\n", "\n").strip()
    try:
        template = protocol.Template(name, system_prompt, variant, layout)  # type: ignore[arg-type]
    except protocol.TemplateInvalid as exc:
        raise TemplateError(f"{where}{exc}", exc.field) from None
    if template.version in protocol.BUILTIN_TEMPLATES:
        raise TemplateError(f"name: {name!r} is a built-in template's name", "name")
    return template


def prompt_template_create(
    *,
    name: str,
    system_prompt: str | bytes,
    variant: str = "qta",
    layout: str = "tagged",
    source_file: str = "",
    user=None,
) -> PromptTemplate:
    """Store a user's template (idempotent: the same content under the same name gives the stored row back)."""
    template = prompt_template_check(
        name=name, system_prompt=system_prompt, variant=variant, layout=layout, source_file=source_file
    )
    row, _ = PromptTemplate.objects.get_or_create(
        version=template.version,
        defaults={
            "name": template.name,
            "content_hash": template.content_hash,
            "variant": template.variant,
            "layout": template.layout,
            "system_prompt": template.system,
            "source_file": source_file[:255],
            "created_by": user,
        },
    )
    return row
