"""navil against the official code's outputs (../shared/fixtures/official-tiny), tolerances of its README."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

import navil


def _load(fixture_dir):
    model = navil.load_model(fixture_dir, dtype=torch.float32, device="cpu")
    return model, load_file(fixture_dir / "inputs.safetensors"), load_file(fixture_dir / "expected.safetensors")


@torch.no_grad()
def test_vision_features_match_official(fixture_dir):
    model, inp, exp = _load(fixture_dir)
    pv, thw = inp["pixel_values"], inp["image_grid_thw"]
    assert torch.equal(model.vision_model.plan(thw).window_index, exp["vit_window_index"])
    vit = model.vision_model(pv, thw)
    assert (vit - exp["vit_last_hidden_state"]).abs().max() <= 1e-4
    shuffled = vit.reshape(-1, 4 * vit.shape[-1])
    assert (shuffled - exp["vit_pixel_shuffled"]).abs().max() <= 1e-4
    assert (model.extract_features(pv, thw) - exp["vit_embeds"]).abs().max() <= 1e-4


@torch.no_grad()
def test_logits_and_losses_match_official(fixture_dir):
    model, inp, exp = _load(fixture_dir)
    kwargs = {"input_ids": inp["input_ids"], "pixel_values": inp["pixel_values"], "image_grid_thw": inp["image_grid_thw"]}
    out = model(**kwargs, labels=inp["labels"], attention_mask=inp["attention_mask"])
    diff = (out.logits - exp["logits"]).abs()
    assert out.logits.shape == exp["logits"].shape
    assert diff.max() <= 2e-4 and diff.mean() <= 1e-5
    assert abs(out.loss.item() - exp["loss"].item()) <= 1e-5
    answer_only = model(**kwargs, labels=inp["labels_answer_only"])
    assert abs(answer_only.loss.item() - exp["loss_answer_only"].item()) <= 1e-5


@torch.no_grad()
def test_processor_feeds_model_like_official(fixture_dir):
    """The whole pipeline from PNG files: processor output reproduces the official logits."""
    import json

    from PIL import Image

    model, inp, exp = _load(fixture_dir)
    meta = json.loads((fixture_dir / "meta.json").read_text())
    images = [Image.open(fixture_dir / im["file"]) for im in meta["images"]]
    processed = navil.ImageProcessor.from_pretrained(fixture_dir)(images, multi_scale=True)
    out = model(input_ids=inp["input_ids"], pixel_values=processed.pixel_values,
                image_grid_thw=processed.image_grid_thw)
    assert (out.logits - exp["logits"]).abs().max() <= 2e-4
