"""Loading checkpoints built offline, and clear errors for broken ones."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from qta.loading import CheckpointError, choose_placement, load_model, load_processor
from qta.tiny import SPECIAL_TOKENS


def test_a_tiny_checkpoint_loads_back_like_any_checkpoint(tiny_dir):
    processor = load_processor(tiny_dir)
    model = load_model(tiny_dir, choose_placement("cpu"))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 400_000
    assert model.config.text_config.hidden_size == 64 and model.config.text_config.num_hidden_layers == 2
    # Without torchvision the image-only processor is used, with the PIL image processor; the tokenizer was trained.
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert processor.tokenizer.padding_side == "left"
    for token in SPECIAL_TOKENS:
        assert processor.tokenizer.convert_tokens_to_ids(token) is not None
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # The saved files name the stock processor class, so machines with torchvision use AutoProcessor as usual.
    assert (
        json.loads((tiny_dir / "processor_config.json").read_text())["processor_class"]
        == "Qwen2_5_VLProcessor"
    )


def test_the_chat_template_places_the_vision_tokens_before_the_query(tiny_dir):
    from qta import protocol

    processor = load_processor(tiny_dir)
    messages = protocol.build_messages(question="Q?", thinking="T", answer="A", has_image=True)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.index("<|vision_start|><|image_pad|><|vision_end|>") < text.index("<question>")
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


def test_pixel_limits_are_configurable(tiny_dir):
    processor = load_processor(tiny_dir, max_pixels=56 * 56)
    assert processor.image_processor.size["longest_edge"] == 56 * 56


def test_placement_is_float32_on_cpu_and_overridable():
    assert choose_placement("cpu").dtype == torch.float32
    assert choose_placement("cpu", "bfloat16").dtype == torch.bfloat16
    if not torch.cuda.is_available():
        assert choose_placement().device == "cpu"
    with pytest.raises(CheckpointError, match="unknown dtype 'fp7'"):
        choose_placement("cpu", "fp7")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("config.json", "missing config.json"),
        ("model.safetensors", "missing weights file"),
        ("tokenizer.json", "missing tokenizer file"),
        ("processor_config.json", "missing image processor file"),
    ],
)
def test_an_incomplete_checkpoint_names_the_missing_file(tiny_dir, tmp_path, remove, message):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / remove).unlink()
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(broken, choose_placement("cpu"))
    assert str(broken) in str(error.value)


def test_a_missing_shard_is_named(tiny_dir, tmp_path):
    broken = tmp_path / "sharded"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing weight shard model-00001-of-00002.safetensors"):
        load_processor(broken)


def test_a_missing_directory_and_an_uncached_hub_id_offline_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere", choose_placement("cpu"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="Qwen/Qwen2.5-VL-3B-Instruct: cannot load"):
        load_processor("Qwen/Qwen2.5-VL-3B-Instruct")
