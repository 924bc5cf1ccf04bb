from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html

from annotation.services import ImportRejected
from common.adminforms import AdminRoleModelAdmin, EndpointAdmin, admin_form
from common.http import parse_ids
from generation import runs, services
from generation.models import Expansion, GenerationRun, GenerationTask, Generator, ImagePool, SeedSet, Variant
from qta.images import ArchiveRejected, ZipImageSource


class SeedImportForm(forms.Form):
    data_file = forms.FileField(
        label="Seed queries",
        help_text="JSONL (one object per line) or CSV with a header row: text (required), category, source, id.",
    )
    name = forms.CharField(required=False, help_text="The set's name (default: the file's name).")
    pairs = forms.ChoiceField(
        required=False, label="Image+text pairs",
        choices=[("", "no: text queries, to expand here"), ("hades", "HADES pairs, as given"), ("cs_dj", "CS-DJ pairs, as given")],
        help_text="Pair files also give image (a path in the zip below); each row becomes a variant as it is.",
    )  # fmt: skip
    images_archive = forms.FileField(required=False, label="Images (zip)", help_text="For pair files.")


class ExpandForm(forms.Form):
    kinds = forms.MultipleChoiceField(
        choices=[(k, k.label) for k in services.EXPANSIONS], widget=forms.CheckboxSelectMultiple,
        initial=list(services.EXPANSIONS),
    )  # fmt: skip
    irrelevant_pool = forms.ModelChoiceField(ImagePool.objects.all(), required=False,
                                             help_text="Irrelevant images are drawn from it at random (seeded).")  # fmt: skip
    aligned_pool = forms.ModelChoiceField(ImagePool.objects.all(), required=False,
                                          help_text="Aligned images: the image whose caption is closest to the seed.")  # fmt: skip
    rng_seed = forms.IntegerField(initial=0, help_text="The same seed draws the same irrelevant images.")
    font_size = forms.IntegerField(required=False, min_value=8, max_value=200,
                                   help_text="Typographic images: starting font size (shrinks for long requests).")  # fmt: skip


@admin.register(SeedSet)
class SeedSetAdmin(AdminRoleModelAdmin):
    list_display = ["name", "queries_count", "variants_count", "source_file", "created_by", "created_at"]
    readonly_fields = ["name", "source_file", "created_by", "created_at"]
    actions = ["expand", "generate"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_queries=Count("queries", distinct=True),
                n_variants=Count("queries__variants", distinct=True),
            )
        )

    @admin.display(description="queries", ordering="n_queries")
    def queries_count(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("seed_set", args=[obj.pk]), obj.n_queries)

    @admin.display(description="variants", ordering="n_variants")
    def variants_count(self, obj):
        return obj.n_variants

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        expand = self.admin_site.admin_view(self.expand_view)
        generate = self.admin_site.admin_view(lambda request: generate_view(self, request))
        return [path("expand/", expand, name="generation_seedset_expand"),
                path("generate/", generate, name="generation_seedset_generate"), *super().get_urls()]  # fmt: skip

    def add_view(self, request, form_url="", extra_context=None):
        """Import a file of text seed queries; every row is checked and nothing is stored unless all are good."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = SeedImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["data_file"]
            archive = form.cleaned_data.get("images_archive")
            images = None
            try:
                images = ZipImageSource(archive, name=archive.name) if archive else None
                seed_set = services.seeds_import(
                    data=upload.read(), name=upload.name, user=request.user, set_name=form.cleaned_data["name"],
                    pairs=form.cleaned_data.get("pairs") or "", images=images,
                )  # fmt: skip
            except ImportRejected as exc:
                errors = [str(e) for e in exc.errors]
                form.add_error(None, f"{len(errors)} error(s) in {upload.name}; nothing was imported")
            except ArchiveRejected as exc:
                form.add_error("images_archive", str(exc))
            else:
                self.message_user(request, f"{seed_set} imported: {seed_set.queries.count()} queries.")
                return redirect("seed_set", set_id=seed_set.pk)
            finally:
                if images is not None:
                    images.close()
        return admin_form(self, request, form, "Import seed queries", errors=errors)

    @admin.action(
        description="Expand the selected seed sets into image+text variants …", permissions=["admin_role"]
    )
    def expand(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:generation_seedset_expand')}?ids={ids}")

    @admin.action(
        description="Generate traces for the selected seed sets' variants …", permissions=["admin_role"]
    )
    def generate(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:generation_seedset_generate')}?ids={ids}")

    def expand_view(self, request):
        if not self.has_admin_role_permission(request):
            raise PermissionDenied  # the page the "expand" action opens: the same gate
        ids = parse_ids(request.GET.get("ids", "").split(","))
        sets = list(SeedSet.objects.filter(pk__in=ids))
        form = ExpandForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            parameters = {"kinds": data["kinds"], "rng_seed": data["rng_seed"], "font_size": data.get("font_size"),
                          "irrelevant_pool": data["irrelevant_pool"].pk if data["irrelevant_pool"] else None,
                          "aligned_pool": data["aligned_pool"].pk if data["aligned_pool"] else None}  # fmt: skip
            try:
                expansion = services.expansion_create(
                    seed_sets=sets, parameters=parameters, user=request.user
                )
            except services.ExpansionError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    f"{expansion} queued: {expansion.total} seed(s); its progress is shown on the seed set's page.",
                )
                return redirect("seed_set", set_id=sets[0].pk)
        names = ", ".join(s.name for s in sets) or "no seed set selected"
        return admin_form(self, request, form, f"Expand {names}", submit="Expand",
                            intro="Each seed gets one variant per kind; expanding again with the same settings adds nothing.")  # fmt: skip


class PoolImportForm(forms.Form):
    name = forms.SlugField(help_text="A new pool, or an existing one to add to.")
    images_archive = forms.FileField(label="Images (zip)")
    captions = forms.FileField(
        required=False,
        help_text='Optional: JSONL {"image": path, "caption": text} or CSV image,caption. Without it every image '
        "in the zip goes in uncaptioned (fine for irrelevant images; aligned ones need captions).",
    )


@admin.register(ImagePool)
class ImagePoolAdmin(AdminRoleModelAdmin):
    list_display = ["name", "description", "created_at"]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PoolImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            archive = form.cleaned_data["images_archive"]
            try:
                source = ZipImageSource(archive, name=archive.name)
                try:
                    captions = form.cleaned_data.get("captions")
                    pool = services.pool_import(
                        name=form.cleaned_data["name"], images=source,
                        entries=[(relative, "") for relative in sorted(source.entries)],
                        captions=captions.read() if captions else None,
                        captions_name=captions.name if captions else "",
                    )  # fmt: skip
                finally:
                    source.close()
            except ImportRejected as exc:
                errors = [str(e) for e in exc.errors]
                form.add_error(None, f"{len(errors)} error(s); nothing was imported")
            except ArchiveRejected as exc:
                form.add_error("images_archive", str(exc))
            else:
                self.message_user(request, f"pool {pool.name}: {pool.images.count()} image(s).")
                return redirect("admin:generation_imagepool_changelist")
        return admin_form(self, request, form, "Import an image pool", errors=errors)


@admin.register(Variant)
class VariantAdmin(AdminRoleModelAdmin):
    list_display = ["__str__", "kind", "seed_text", "has_image", "created_at"]
    list_filter = ["kind", "seed__seed_set"]
    readonly_fields = ["seed", "kind", "text", "image", "derivation", "key", "created_at"]
    list_select_related = ["seed"]

    @admin.display(description="seed")
    def seed_text(self, obj):
        return obj.seed.text[:80]

    @admin.display(boolean=True, description="image")
    def has_image(self, obj):
        return obj.image_id is not None

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Generator)
class GeneratorAdmin(EndpointAdmin):
    list_display = ["name", "backend", "model_name", "base_url", "max_concurrency", "max_tokens", "temperature",
                    "samples_per_variant", "enabled"]  # fmt: skip
    list_filter = ["backend", "enabled"]
    fieldsets = [
        (None, {"fields": ["name", "backend", "model_name", "enabled"]}),
        ("OpenAI-compatible server", {"fields": ["base_url", "api_key_env"]}),
        (
            "Calls",
            {"fields": ["max_concurrency", "timeout_s", "max_tokens", "temperature", "samples_per_variant"]},
        ),
    ]
    actions = ["test_connection"]


class GenerateForm(forms.Form):
    generators = forms.ModelMultipleChoiceField(Generator.objects.filter(enabled=True),
                                                widget=forms.CheckboxSelectMultiple)  # fmt: skip
    kinds = forms.MultipleChoiceField(
        choices=Variant.Kind.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Which variants of the selected seed sets to answer (none ticked: all).",
    )  # fmt: skip
    split = forms.ChoiceField(choices=[("train", "train"), ("test", "test")])
    subset = forms.CharField(
        required=False, max_length=64, help_text="Given to the samples (default: the seed set)."
    )


def generate_view(modeladmin, request):
    """Answer the variants of the seed sets in ?ids= with the chosen generators, as a generation run."""
    if not modeladmin.has_admin_role_permission(request):
        raise PermissionDenied  # the page the "generate" action opens: the same gate
    ids = parse_ids(request.GET.get("ids", "").split(","))
    form = GenerateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        variants = Variant.objects.filter(seed__seed_set__in=ids)
        if form.cleaned_data["kinds"]:
            variants = variants.filter(kind__in=form.cleaned_data["kinds"])
        try:
            run = runs.generation_run_create(
                variants=variants, generators=list(form.cleaned_data["generators"]), split=form.cleaned_data["split"],
                subset=form.cleaned_data["subset"], user=request.user,
            )  # fmt: skip
        except runs.GenerationError as exc:
            form.add_error(None, str(exc))
        else:
            modeladmin.message_user(request, f"{run} queued: {run.total} replies to ask.")
            return redirect("generation_run", run_id=run.pk)
    names = (
        ", ".join(SeedSet.objects.filter(pk__in=ids).values_list("name", flat=True)) or "no seed set selected"
    )
    return admin_form(modeladmin, request, form, f"Generate traces for {names}", submit="Generate",
                      intro="Each variant is answered by each generator (its samples per variant times); replies "
                      "already made with the same parameters are not asked again.")  # fmt: skip


@admin.register(Expansion)
class ExpansionAdmin(AdminRoleModelAdmin):
    list_display = ["__str__", "status", "progress", "created", "kept", "created_by", "created_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in Expansion._meta.fields] + ["seed_sets"]
    actions = ["cancel", "queue_again"]

    @admin.display(description="seeds done")
    def progress(self, expansion):
        return f"{expansion.done} / {expansion.total} ({expansion.percent}%)"

    def has_add_permission(self, request) -> bool:
        return False  # expansions start from the seed sets' "Expand" action

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(
        description="Cancel the selected expansions (variants made so far are kept)",
        permissions=["admin_role"],
    )
    def cancel(self, request, queryset):
        n = sum(services.expansion_cancel(expansion) for expansion in queryset)
        self.message_user(request, f"{n} expansion(s) cancelled.")

    @admin.action(
        description="Queue the selected expansions again (what is there already is kept)",
        permissions=["admin_role"],
    )
    def queue_again(self, request, queryset):
        n = sum(services.expansion_requeue(expansion) for expansion in queryset)
        self.message_user(request, f"{n} expansion(s) queued again.")


@admin.register(GenerationRun)
class GenerationRunAdmin(AdminRoleModelAdmin):
    list_display = ["__str__", "status", "progress", "split", "subset", "created_by", "created_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in GenerationRun._meta.fields] + ["generators"]
    actions = ["send_to_jury", "cancel", "resume"]

    def get_queryset(self, request):
        # The progress column's counts come with the rows: no query per run.
        status = GenerationTask.Status
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_made=Count("tasks", filter=Q(tasks__status__in=[status.DONE, status.FLAGGED])),
                n_flagged=Count("tasks", filter=Q(tasks__status=status.FLAGGED)),
                n_failed=Count("tasks", filter=Q(tasks__status=status.FAILED)),
            )
        )

    @admin.display(description="progress")
    def progress(self, run):
        return format_html('{} / {} made ({} flagged, {} failed) <a href="{}">live</a>', run.n_made, run.total,
                           run.n_flagged, run.n_failed, reverse("generation_run", args=[run.pk]))  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False  # runs start from the seed sets' "Generate traces" action

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(
        description="Cancel the selected runs (samples made so far are kept)", permissions=["admin_role"]
    )
    def cancel(self, request, queryset):
        n = sum(runs.generation_run_cancel(run=run) for run in queryset)
        self.message_user(request, f"{n} run(s) cancelled; replies in flight finish and are kept.")

    @admin.action(description="Resume the selected runs", permissions=["admin_role"])
    def resume(self, request, queryset):
        n = sum(runs.generation_run_resume(run=run) for run in queryset)
        self.message_user(request, f"{n} run(s) resumed; replies already made are not asked again.")

    @admin.action(description="Send the samples made to the jury", permissions=["admin_role"])
    def send_to_jury(self, request, queryset):
        from jury.services import JuryError, jury_run_create

        ids = list(
            GenerationTask.objects.filter(run__in=queryset, sample__isnull=False).values_list(
                "sample_id", flat=True
            )
        )
        try:
            jury_run = jury_run_create(selection={"sample_ids": sorted(set(ids))}, user=request.user)
        except JuryError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        self.message_user(request, f"{jury_run} queued over {jury_run.samples} samples.")
        return redirect("jury_run", run_id=jury_run.pk)
