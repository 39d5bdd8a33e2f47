"""Model behaviour: one expert per token, packed documents, save/load round trip, bad input."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import navil
from navil.errors import CheckpointError, ConfigError, NavilError

FIX = "qwen3-ve-tiny"


@pytest.fixture
def model_and_inputs(fixture_dir):
    model = navil.load_model(fixture_dir)
    return model, load_file(fixture_dir / "inputs.safetensors")


def test_each_token_runs_through_exactly_one_expert(model_and_inputs):
    model, inp = model_and_inputs
    ids = inp["input_ids"]
    n_visual = int(model.visual_mask(ids[0]).sum())
    n_total = ids.numel()
    rows: dict[str, int] = {}

    def hook(name):
        def fn(_mod, args, _out):
            rows[name] = rows.get(name, 0) + args[0].reshape(-1, args[0].shape[-1]).shape[0]
        return fn

    layer = model.language_model.layers[0]
    handles = [mod.register_forward_hook(hook(name)) for name, mod in [
        ("qkv", layer.attn.qkv), ("qkv_visual", layer.attn.qkv_visual), ("o_visual", layer.attn.o_visual),
        ("gate_up", layer.mlp.gate_up), ("gate_up_visual", layer.mlp_visual.gate_up)]]
    with torch.no_grad():
        model(input_ids=ids, pixel_values=inp["pixel_values"], image_grid_thw=inp["image_grid_thw"])
    for h in handles:
        h.remove()
    assert 0 < n_visual < n_total
    assert rows["qkv"] == n_total - n_visual and rows["qkv_visual"] == n_visual
    assert rows["gate_up"] == n_total - n_visual and rows["gate_up_visual"] == n_visual
    assert rows["o_visual"] == n_visual


@torch.no_grad()
def test_packed_documents_equal_separate_runs(model_and_inputs):
    model, inp = model_and_inputs
    a = inp["input_ids"]
    b = torch.tensor([[5, 80, 90, 100, 110, 120, 33]])
    img = {"pixel_values": inp["pixel_values"], "image_grid_thw": inp["image_grid_thw"]}
    pack = torch.cat((a, b), dim=1)
    cu = torch.tensor([0, a.shape[1], a.shape[1] + b.shape[1]])
    packed = model(input_ids=pack, cu_seqlens=cu, **img).logits[0]
    alone_a = model(input_ids=a, **img).logits[0]
    alone_b = model(input_ids=b).logits[0]
    assert (packed[: a.shape[1]] - alone_a).abs().max() < 1e-5
    assert (packed[a.shape[1]:] - alone_b).abs().max() < 1e-5


@torch.no_grad()
def test_padded_batch_equals_rows(model_and_inputs):
    model, _ = model_and_inputs
    rows = [torch.tensor([7, 8, 9, 10, 11]), torch.tensor([40, 41, 42])]
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.long)
    ids[0], mask[0] = rows[0], 1
    ids[1, 2:], mask[1, 2:] = rows[1], 1  # left padded
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert (logits[0] - model(input_ids=rows[0][None]).logits[0]).abs().max() < 1e-5
    assert (logits[1, 2:] - model(input_ids=rows[1][None]).logits[0]).abs().max() < 1e-5


def test_save_pretrained_round_trips_bit_exactly(fixture_dir, tmp_path):
    model = navil.load_model(fixture_dir)
    model.save_pretrained(tmp_path)
    original = load_file(fixture_dir / "model.safetensors")
    written = load_file(tmp_path / "model.safetensors")
    assert sorted(original) == sorted(written)
    assert all(torch.equal(original[k], written[k]) for k in original)
    again = navil.load_model(tmp_path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "navil_chat"
    assert cfg["llm_config"]["architectures"] == json.loads((fixture_dir / "config.json").read_text())[
        "llm_config"]["architectures"]


def test_sharded_save_and_load(fixture_dir, tmp_path):
    model = navil.load_model(fixture_dir)
    model.save_pretrained(tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = navil.load_model(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    shard = min(set(index["weight_map"].values()))
    (tmp_path / shard).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        navil.load_model(tmp_path)


def _copy_fixture(fixture_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(fixture_dir, dst)
    return dst


def test_bad_config_field_is_named(fixture_dir, tmp_path):
    folder = _copy_fixture(fixture_dir, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["llm_config"]["num_attention_heads"] = "four"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="llm_config.num_attention_heads"):
        navil.load_model(folder)
    del cfg["vision_config"]["hidden_size"]
    cfg["llm_config"]["num_attention_heads"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="vision_config.hidden_size"):
        navil.load_model(folder)
    cfg["vision_config"]["hidden_size"] = 64
    cfg["llm_config"]["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="architectures"):
        navil.load_model(folder)


def test_tensor_shape_mismatch_names_key_and_shapes(fixture_dir, tmp_path):
    folder = _copy_fixture(fixture_dir, tmp_path)
    sd = load_file(folder / "model.safetensors")
    sd["mlp1.3.weight"] = torch.zeros(64, 32)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"mlp1\.3\.weight.*\(64, 32\).*\(64, 64\)"):
        navil.load_model(folder)
    del sd["mlp1.3.weight"]
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing.*mlp1.3.weight"):
        navil.load_model(folder)


def test_missing_folder_and_weights(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        navil.load_model(tmp_path / "nope")


def test_image_token_count_mismatch_reports_both_counts(model_and_inputs):
    model, inp = model_and_inputs
    ids = inp["input_ids"]
    ctx = model.img_context_token_id
    n = int((ids == ctx).sum())
    cut = ids.clone()
    cut[0, torch.nonzero(cut[0] == ctx)[0]] = 5
    with pytest.raises(NavilError, match=f"{n - 1} <IMG_CONTEXT>.*{n} visual features"):
        model(input_ids=cut, pixel_values=inp["pixel_values"], image_grid_thw=inp["image_grid_thw"])
    with pytest.raises(NavilError, match=f"{n} <IMG_CONTEXT>.*0 visual"):
        model(input_ids=ids)
