from __future__ import annotations

import hashlib

import factory
from django.core.files.base import ContentFile
from django.utils import timezone

from annotation.models import ImageAsset, Label, Sample
from annotation.services import content_hash
from tests.conftest import png_bytes


class ImageAssetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ImageAsset

    class Params:
        data = factory.Sequence(lambda n: png_bytes(color=(n % 256, 40, 80)))

    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(o.data).hexdigest())
    file = factory.LazyAttribute(lambda o: ContentFile(o.data, name=f"{o.sha256}.png"))
    width = 16
    height = 16
    format = "PNG"
    size_bytes = factory.LazyAttribute(lambda o: len(o.data))


class SampleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Sample

    question = factory.Sequence(lambda n: f"Question number {n}?")
    thinking = "First I read the question.\n\nThen I decide how to answer."
    answer = "Here is a safe answer."
    subset = "unit"
    image = None
    content_hash = factory.LazyAttribute(
        lambda o: content_hash(
            question=o.question,
            thinking=o.thinking,
            answer=o.answer,
            image_sha256=o.image.sha256 if o.image else None,
        )
    )


class LabelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Label

    sample = factory.SubFactory(SampleFactory)
    source_kind = Label.SourceKind.JUROR
    source_name = factory.Sequence(lambda n: f"juror-{n}")
    prompt_version = "qta-v1"
    judgment = 0.0
    status = Label.Status.VALID
    created_at = factory.LazyFunction(timezone.now)
