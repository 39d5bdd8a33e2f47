"""Training data path: JSONL / webdataset sources -> tokens + labels -> packs -> seeded, resumable loader."""
from __future__ import annotations

import io
import itertools
import json
import logging
import math
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from navil.data.conversations import (
    BAD_CONVERSATION,
    BAD_IMAGE,
    IGNORE_INDEX,
    IMAGE_COUNT_MISMATCH,
    MALFORMED_JSON,
    MISSING_IMAGE,
    TOO_MANY_PATCHES,
    TOO_MANY_TOKENS,
    SampleError,
    image_grids,
    parse_conversations,
    tokenize_conversation,
)
from navil.data.loader import DataSource, PackedLoader
from navil.data.packing import Pack
from navil.errors import ConfigError, NavilError
from navil.model.navil import flatten_batch, next_token_targets
from navil.processing.chat import DEFAULT_SYSTEM_MESSAGE, expand_image_placeholders, render_conversation
from navil.processing.image import ImageProcessor
from navil.processing.tokenizer import load_tokenizer

_HERE = Path(__file__).resolve().parent
CKPT = _HERE / "fixtures" / "official-tiny" / "qwen3-ve-tiny"
if not CKPT.is_dir():  # pragma: no cover - shared fixture location
    CKPT = _HERE.parents[1] / "shared" / "fixtures" / "official-tiny" / "qwen3-ve-tiny"
TEMPLATE = "qwen3-chat"
SYS = "You are helpful."  # short system message: keeps byte-level sequences small

IMAGE_SIZES = {
    "a.png": (40, 60), "b.png": (130, 70), "c.jpg": (64, 64), "d.png": (33, 97), "big.png": (200, 150)
}


# ------------------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(CKPT)


@pytest.fixture(scope="module")
def proc():
    return ImageProcessor.from_pretrained(CKPT)


def _image(size, seed):
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def _png_bytes(img, fmt="PNG"):
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _human(v):
    return {"from": "human", "value": v}


def _gpt(v):
    return {"from": "gpt", "value": v}


def good_records():
    return [
        {"image": "images/a.png",
         "conversations": [_human("<image>\nWhat is this?"), _gpt("Noise, mostly.")]},
        {"image": ["images/b.png", "images/c.jpg"],
         "conversations": [_human("Compare <image> and <image>."), _gpt("The first is wider.")]},
        {"conversations": [_human("What is 2+2?"), _gpt("4")]},
        {"image": "images/d.png", "conversations": [
            _human("<image>\nDescribe it."), _gpt("A tall picture."),
            _human("Colours?"), _gpt("Many colours."), _human("Thanks")]},
        {"image": "images/c.jpg", "conversations": [_human("No placeholder here"), _gpt("Still an image.")]},
        {"conversations": [{"from": "system", "value": "Be terse."}, _human("Hi"), _gpt("Hello.")]},
        {"image": ["images/a.png"], "conversations": [_human("<image> caption?"), _gpt("Random pixels.")]},
        {"image": "images/big.png", "conversations": [_human("<image>\nBig?"), _gpt("Yes, big.")]},
        {"conversations": [_human("Say a word."), _gpt("word")]},
        {"image": "images/b.png", "conversations": [_human("<image>\nShape?"), _gpt("Wide rectangle.")]},
        {"conversations": [_human("Count to three."), _gpt("one two three")]},
        {"image": "images/d.png", "conversations": [_human("<image>\nOrientation?"), _gpt("Portrait.")]},
    ]


CAPTIONS = {f"s{i:03d}": f"caption number {i}" for i in range(6)}


def _write_tar(path, entries):
    with tarfile.open(path, "w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    for i, (name, size) in enumerate(IMAGE_SIZES.items()):
        _image(size, i).save(root / "images" / name)
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    recs = good_records()
    with open(root / "train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n\n" for r in recs)  # blank lines are ignored
    # webdataset shard: png + txt, jpg + json
    entries = []
    for i, (key, cap) in enumerate(CAPTIONS.items()):
        img = _image((48 + 8 * i, 40), 100 + i)
        if i % 2:
            entries += [(f"{key}.jpg", _png_bytes(img, "JPEG")),
                        (f"{key}.json", json.dumps({"caption": cap}).encode())]
        else:
            entries += [(f"{key}.png", _png_bytes(img)), (f"{key}.txt", cap.encode())]
    _write_tar(root / "shard-000.tar", entries)
    # text-only sources for mixing
    for name, word in (("text_a.jsonl", "alpha"), ("text_b.jsonl", "beta")):
        with open(root / name, "w") as f:
            for i in range(20):
                conv = [_human(f"{word} {i}?"), _gpt(word)]
                f.write(json.dumps({"id": f"{word}{i}", "conversations": conv}) + "\n")
    # good samples interleaved with bad ones (for resume with skips in the stream)
    lines = [json.dumps(r) for r in recs[6:]] + _bad_lines()
    order = np.random.default_rng(0).permutation(len(lines))
    (root / "mixed.jsonl").write_text("\n".join(lines[i] for i in order))
    return root, recs


def _loader(sources, tok, proc, **kw):
    kw.setdefault("max_tokens", 1024)
    kw.setdefault("max_patches", 512)
    kw.setdefault("seed", 0)
    kw.setdefault("system_message", SYS)
    return PackedLoader(sources, tok, proc, TEMPLATE, **kw)


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def _same_pack(a: Pack, b: Pack) -> bool:
    if a.sample_ids != b.sample_ids or not torch.equal(a.input_ids, b.input_ids):
        return False
    if not (torch.equal(a.labels, b.labels) and torch.equal(a.cu_seqlens, b.cu_seqlens)):
        return False
    if (a.pixel_values is None) != (b.pixel_values is None):
        return False
    return a.pixel_values is None or (
        torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.image_grid_thw, b.image_grid_thw)
    )


def _label_runs(labels):
    runs, cur = [], []
    for lab in labels:
        if lab != IGNORE_INDEX:
            cur.append(lab)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _answers(rec):
    conv = [t for t in rec["conversations"] if t["from"] != "system"]
    if conv[-1]["from"] == "human":
        conv = conv[:-1]
    return [t["value"] for t in conv if t["from"] == "gpt"]


# ------------------------------------------------------------------------------------------------------------
# Sample -> tokens
# ------------------------------------------------------------------------------------------------------------


def test_tokenize_labels_exactly_answers_default_system(tok, proc):
    turns = [("<image>\nWhat is it?", "A cat."), ("And <image>?", "A dog, 2 of them.")]
    imgs = [_image((40, 60), 1), _image((130, 70), 2)]
    grids = [image_grids(proc, im.width, im.height, True) for im in imgs]
    out = tokenize_conversation(tok, TEMPLATE, turns, grids, None, proc.merge_size,
                                tok.special_token_ids.img_context)
    assert len(out.input_ids) == len(out.labels)
    # the whole sequence is the rendered conversation with image blocks, default system message included
    rendered = "".join(t for t, _ in render_conversation(TEMPLATE, turns))
    processed = proc(imgs, multi_scale=True)
    expected = expand_image_placeholders(rendered, processed.image_grid_thw, processed.num_scales)
    assert tok.decode(out.input_ids) == expected
    assert DEFAULT_SYSTEM_MESSAGE in tok.decode(out.input_ids)
    runs = _label_runs(out.labels)
    assert [tok.decode(r) for r in runs] == ["A cat.<|im_end|>", "A dog, 2 of them.<|im_end|>"]
    # labels equal ids wherever set
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(out.input_ids, out.labels))
    # image tokens: sum over scales of h*w/4, equal to the processor's visual features
    n_ctx = out.input_ids.count(tok.special_token_ids.img_context)
    assert n_ctx == sum(h * w // 4 for _, h, w in processed.image_grid_thw.tolist())
    assert n_ctx == processed.pixel_values.shape[0] // 4
    # official loss-token count = answer tokens (each answer's first token is predicted from the prompt)
    assert out.num_loss_tokens == sum(len(r) for r in runs)


def test_parse_conversations_validation():
    with pytest.raises(SampleError) as e:
        parse_conversations([_human("<image> <image>"), _gpt("x")], ["a.png"])
    assert e.value.reason == IMAGE_COUNT_MISMATCH
    with pytest.raises(SampleError) as e:
        parse_conversations([_human("text"), _gpt("x")], [])  # fine
        parse_conversations([_human("<image>"), _gpt("x")], [])
    assert e.value.reason == IMAGE_COUNT_MISMATCH
    with pytest.raises(SampleError) as e:
        parse_conversations([_gpt("x"), _human("y")], [])
    assert e.value.reason == BAD_CONVERSATION
    with pytest.raises(SampleError) as e:
        parse_conversations("nope", [])
    assert e.value.reason == BAD_CONVERSATION
    c = parse_conversations([_human("q"), _gpt("a")], ["x.png", "y.png"])  # no placeholder: prepended
    assert c.turns[0][0] == "<image>\n<image>\nq"


@pytest.mark.parametrize("size", [(40, 60), (200, 150), (130, 70), (300, 300), (20, 20), (33, 97), (511, 7)])
@pytest.mark.parametrize("multi_scale", [True, False])
def test_predicted_grids_match_processor(proc, size, multi_scale):
    out = proc(_image(size, 0), multi_scale=multi_scale)
    assert [list(g) for g in image_grids(proc, *size, multi_scale)] == out.image_grid_thw.tolist()


# ------------------------------------------------------------------------------------------------------------
# Packs
# ------------------------------------------------------------------------------------------------------------


def test_packs_labels_images_and_limits(data, tok, proc):
    root, recs = data
    max_tokens, max_patches = 900, 300
    loader = _loader([{"path": str(root / "train.jsonl")}], tok, proc, max_tokens=max_tokens,
                     max_patches=max_patches)
    ctx = tok.special_token_ids.img_context
    seen = set()
    for pack in _take(loader, 12):
        T = pack.input_ids.shape[1]
        assert pack.input_ids.dtype == pack.labels.dtype == pack.cu_seqlens.dtype == torch.int64
        assert pack.labels.shape == (1, T) and T <= max_tokens and pack.num_patches <= max_patches
        cu = pack.cu_seqlens.tolist()
        assert cu[0] == 0 and cu[-1] == T and len(cu) == pack.num_samples + 1 == len(pack.sample_ids) + 1
        assert all(b > a for a, b in itertools.pairwise(cu))
        if pack.pixel_values is None:
            assert pack.num_patches == 0 and pack.image_grid_thw is None
        else:
            assert pack.pixel_values.dtype == torch.float32 and pack.image_grid_thw.dtype == torch.int64
            assert pack.num_patches == pack.pixel_values.shape[0] == int(pack.image_grid_thw.prod(1).sum())
        # num_loss_tokens is what the model's loss rule counts
        layout = flatten_batch(pack.input_ids, cu_seqlens=pack.cu_seqlens)
        src, _ = next_token_targets(layout, pack.labels[0], ctx)
        assert pack.num_loss_tokens == src.numel()
        row = 0
        for i, (s, item) in enumerate(pack.sample_ids):
            seen.add(item)
            ids = pack.input_ids[0, cu[i]:cu[i + 1]].tolist()
            labels = pack.labels[0, cu[i]:cu[i + 1]].tolist()
            assert labels[0] == IGNORE_INDEX
            rec = recs[item]
            assert [tok.decode(r) for r in _label_runs(labels)] == [a + "<|im_end|>" for a in _answers(rec)]
            sys_msg = "Be terse." if rec["conversations"][0]["from"] == "system" else SYS
            assert tok.decode(ids).startswith(f"<|im_start|>system\n{sys_msg}<|im_end|>")
            # images: this sample's rows of pixel_values are exactly the processor's output for its files
            paths = rec.get("image") or []
            paths = [paths] if isinstance(paths, str) else paths
            n_rows = pack.grid_rows_per_sample[i]
            if paths:
                ref = proc([str(root / p) for p in paths], multi_scale=True)
                grid = pack.image_grid_thw[row:row + n_rows]
                assert torch.equal(grid, ref.image_grid_thw)
                start = int(pack.image_grid_thw[:row].prod(1).sum()) if row else 0
                n = ref.pixel_values.shape[0]
                assert torch.equal(pack.pixel_values[start:start + n], ref.pixel_values)
                assert ids.count(ctx) == sum(h * w // 4 for _, h, w in ref.image_grid_thw.tolist())
            else:
                assert n_rows == 0 and ctx not in ids
            row += n_rows
    assert seen == set(range(len(recs)))  # every good sample showed up
    assert loader.skipped_samples == 0


def test_webdataset_captions(data, tok, proc):
    root, _ = data
    loader = _loader([{"path": str(root / "shard-000.tar"), "kind": "webdataset"}], tok, proc,
                     system_message=None, max_tokens=2048)
    caps = list(CAPTIONS.values())
    got = []
    for pack in _take(loader, 3):
        cu = pack.cu_seqlens.tolist()
        for i, (_, item) in enumerate(pack.sample_ids):
            ids = pack.input_ids[0, cu[i]:cu[i + 1]].tolist()
            labels = pack.labels[0, cu[i]:cu[i + 1]].tolist()
            text = tok.decode(ids)
            assert DEFAULT_SYSTEM_MESSAGE in text
            assert "<|im_start|>user\n<img>" in text and "</img>\nDescribe the image.<|im_end|>" in text
            assert [tok.decode(r) for r in _label_runs(labels)] == [caps[item] + "<|im_end|>"]
            got.append(item)
    assert set(got) == set(range(len(caps)))
    # custom prompt, kind inferred from the path (a directory of shards)
    loader = _loader([{"path": str(root), "prompt": "Caption:"}], tok, proc)
    assert loader.sources[0].kind == "webdataset"
    assert "</img>\nCaption:<|im_end|>" in tok.decode(next(loader).input_ids[0])


def test_determinism_from_seed(data, tok, proc):
    root, _ = data
    srcs = [{"path": str(root / "train.jsonl")}, {"path": str(root / "shard-000.tar"), "weight": 0.5}]
    a = _take(_loader(srcs, tok, proc), 6)
    b = _take(_loader(srcs, tok, proc), 6)
    c = _take(_loader(srcs, tok, proc, seed=1), 6)
    assert all(_same_pack(x, y) for x, y in zip(a, b))
    assert [p.sample_ids for p in a] != [p.sample_ids for p in c]
    # epochs reshuffle: the order of the second pass differs from the first
    one = _loader([str(root / "train.jsonl")], tok, proc, max_tokens=1024)
    order = [sid for p in _take(one, 14) for sid in p.sample_ids][:24]
    assert sorted(order[:12]) == sorted(order[12:24]) and order[:12] != order[12:24]
    first = next(_loader([str(root / "train.jsonl")], tok, proc, shuffle=False))
    assert first.sample_ids == [(0, i) for i in range(first.num_samples)]


def test_rank_split_interleaves_to_single_stream(data, tok, proc):
    root, _ = data
    srcs = [{"path": str(root / "train.jsonl")}, {"path": str(root / "shard-000.tar")}]
    single = _take(_loader(srcs, tok, proc), 8)
    r0 = _take(_loader(srcs, tok, proc, rank=0, world_size=2), 4)
    r1l = _loader(srcs, tok, proc, rank=1, world_size=2)
    r1 = _take(r1l, 4)
    inter = [p for pair in zip(r0, r1) for p in pair]
    assert all(_same_pack(x, y) for x, y in zip(single, inter))
    # W=3 too
    ranks = [_take(_loader(srcs, tok, proc, rank=r, world_size=3), 2) for r in range(3)]
    inter3 = [ranks[k % 3][k // 3] for k in range(6)]
    assert all(_same_pack(x, y) for x, y in zip(single, inter3))
    # after the same number of steps every rank reports the same state
    r0l = _loader(srcs, tok, proc, rank=0, world_size=2)
    _take(r0l, 4)
    assert r0l.state_dict() == r1l.state_dict()


def test_exact_resume(data, tok, proc):
    root, _ = data
    srcs = [{"path": str(root / "train.jsonl"), "weight": 2}, {"path": str(root / "shard-000.tar")},
            {"path": str(root / "mixed.jsonl"), "weight": 0.5}]
    kw = {"max_tokens": 1500, "max_patches": 500}
    full = _loader(srcs, tok, proc, **kw)
    ref = _take(full, 14)  # crosses epoch boundaries of the sources, with bad samples skipped on the way
    assert full.skipped_samples > 0 and min(s["epoch"] for s in full.state_dict()["sources"]) >= 1
    a = _loader(srcs, tok, proc, **kw)
    fresh = a.state_dict()
    _take(a, 5)
    state = json.loads(json.dumps(a.state_dict()))  # JSON round trip
    assert len(json.dumps(state)) < 2000
    assert state["packs"] == 5
    assert set(state) >= {"epoch", "draws", "sources", "skipped_samples", "skip_reasons"}
    b = _loader(srcs, tok, proc, **kw)
    b.load_state_dict(state)
    assert b.skip_reasons == Counter(state["skip_reasons"])
    rest = _take(b, 9)
    assert all(_same_pack(x, y) for x, y in zip(ref[5:], rest))
    assert b.state_dict() == full.state_dict()
    assert b.skip_reasons == full.skip_reasons and b.skipped_samples == full.skipped_samples
    c = _loader(srcs, tok, proc, **kw)
    _take(c, 2)
    c.load_state_dict(fresh)  # rewinding to the start works too
    assert _same_pack(next(c), ref[0])
    # a state saved with 2 ranks resumes a single process (and vice versa) on the same global stream
    r1 = _loader(srcs, tok, proc, rank=1, world_size=2, **kw)
    _take(r1, 2)  # global packs 0..3 consumed
    one = _loader(srcs, tok, proc, **kw)
    one.load_state_dict(r1.state_dict())
    assert all(_same_pack(x, y) for x, y in zip(ref[4:8], _take(one, 4)))
    two = _loader(srcs, tok, proc, rank=1, world_size=2, **kw)
    two.load_state_dict(state)  # 5 global packs done: rank 1 continues with pack 5
    assert all(_same_pack(x, y) for x, y in zip([ref[5], ref[7]], _take(two, 2)))
    with pytest.raises(NavilError, match="seed"):
        _loader(srcs, tok, proc, seed=3, **kw).load_state_dict(state)


# ------------------------------------------------------------------------------------------------------------
# Bad data
# ------------------------------------------------------------------------------------------------------------


def _bad_lines():
    long_answer = "x" * 3000
    return [
        '{"image": "images/a.png", "conversations": [',  # malformed json
        json.dumps({"image": "images/nope.png", "conversations": [_human("<image>\nq"), _gpt("a")]}),
        json.dumps({"image": "images/corrupt.png", "conversations": [_human("<image>\nq"), _gpt("a")]}),
        json.dumps({"image": "images/a.png", "conversations": [_human("<image> <image>"), _gpt("a")]}),
        json.dumps({"conversations": [_human("long"), _gpt(long_answer)]}),
        json.dumps({"image": ["images/big.png"] * 3, "conversations": [_human("<image>" * 3), _gpt("a")]}),
        json.dumps({"conversations": [_gpt("answer first"), _human("q")]}),
        "[1, 2, 3]",  # valid JSON, not an object
    ]


BAD_EXPECTED = {MALFORMED_JSON: 2, MISSING_IMAGE: 1, BAD_IMAGE: 1, IMAGE_COUNT_MISMATCH: 1,
                TOO_MANY_TOKENS: 1, TOO_MANY_PATCHES: 1, BAD_CONVERSATION: 1}


def test_bad_samples_skipped_and_counted(data, tok, proc, caplog, tmp_path):
    root, recs = data
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(r) for r in recs[:4]] + _bad_lines()
    path.write_text("\n".join(lines) + "\n")
    # webdataset with a corrupt image and a missing caption
    good = _png_bytes(_image((50, 40), 7))
    _write_tar(tmp_path / "w.tar", [("k0.png", good), ("k0.txt", b"fine"), ("k1.png", b"garbage"),
                                    ("k1.txt", b"broken image"), ("k2.png", good), ("k3.txt", b"no image")])
    srcs = [{"path": str(path), "root": str(root)}, {"path": str(tmp_path / "w.tar")}]
    with caplog.at_level(logging.WARNING, logger="navil.data"):
        loader = _loader(srcs, tok, proc, max_tokens=1500, max_patches=500, max_logged_skips=3)
        while loader.epoch < 1:
            next(loader)
    state = loader.state_dict()
    completed = [Counter(s["skips"]) - Counter(s["epoch_skips"]) for s in state["sources"]]
    # each completed full pass of a source skips exactly its bad items, each under its reason
    assert all(s["epoch"] >= 1 for s in state["sources"])
    per_pass_0 = Counter({k: v // state["sources"][0]["epoch"] for k, v in completed[0].items()})
    assert per_pass_0 == Counter(BAD_EXPECTED)
    per_pass_1 = Counter({k: v // state["sources"][1]["epoch"] for k, v in completed[1].items()})
    assert per_pass_1 == Counter({BAD_IMAGE: 1, BAD_CONVERSATION: 1, MISSING_IMAGE: 1})
    assert loader.skipped_samples == sum(loader.skip_reasons.values()) >= 10
    assert set(loader.skip_reasons) == set(BAD_EXPECTED) | {BAD_IMAGE, MISSING_IMAGE, BAD_CONVERSATION}
    msgs = [r.getMessage() for r in caplog.records if r.name == "navil.data"]
    assert len(msgs) == 4 and "not logged" in msgs[-1]


def test_all_bad_raises(data, tok, proc, tmp_path):
    root, _ = data
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(_bad_lines()) + "\n")
    loader = _loader([{"path": str(path), "root": str(root)}], tok, proc, max_tokens=1500, max_patches=500)
    with pytest.raises(NavilError) as e:
        next(loader)
    msg = str(e.value)
    assert "no usable samples in" in msg and str(path) in msg and "8 skipped" in msg
    assert "malformed json: 2" in msg and "missing image: 1" in msg
    # one good source does not hide a completely broken one
    mixed = _loader([str(root / "train.jsonl"), {"path": str(path), "root": str(root)}], tok, proc,
                    max_tokens=1500, max_patches=500)
    with pytest.raises(NavilError, match="no usable samples"):
        _take(mixed, 50)


def test_from_checkpoint(data):
    root, _ = data
    loader = PackedLoader.from_checkpoint(CKPT, [str(root / "train.jsonl")], max_tokens=2048, max_patches=512)
    assert loader.template == TEMPLATE and loader.processor.min_pixels == 4 * 16 * 16
    text = loader.tokenizer.decode(next(loader).input_ids[0])
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in text


def test_missing_source_and_config_errors(data, tok, proc, tmp_path):
    root, _ = data
    with pytest.raises(NavilError, match="does not exist"):
        _loader([str(tmp_path / "none.jsonl")], tok, proc)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(NavilError, match="no samples"):
        _loader([str(tmp_path / "empty.jsonl")], tok, proc)
    with pytest.raises(ConfigError):
        _loader([str(root / "train.jsonl")], tok, proc, rank=2, world_size=2)
    with pytest.raises(ConfigError):
        _loader([str(root / "train.jsonl")], tok, proc, max_tokens=0)


# ------------------------------------------------------------------------------------------------------------
# Sources and mixing
# ------------------------------------------------------------------------------------------------------------


def test_data_source_parsing():
    s = DataSource.from_dict({"path": "a/b.jsonl", "root": "imgs", "weight": 2})
    assert (s.kind, s.root, s.weight) == ("jsonl", "imgs", 2.0)
    assert DataSource.from_dict({"path": "shards/{000..003}.tar"}).kind == "webdataset"
    assert DataSource.parse("x.jsonl")[0].path == "x.jsonl"
    assert DataSource.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError, match="unknown"):
        DataSource.from_dict({"path": "x.jsonl", "wieght": 1})
    with pytest.raises(ConfigError):
        DataSource.from_dict({"path": "x.jsonl", "weight": 0})
    with pytest.raises(ConfigError):
        DataSource.from_dict({"path": "x.jsonl", "kind": "parquet"})
    with pytest.raises(ConfigError):
        DataSource.from_dict({"root": "x"})


def test_weighted_mixing(data, tok, proc):
    root, _ = data
    srcs = [{"path": str(root / "text_a.jsonl"), "weight": 3},
            {"path": str(root / "text_b.jsonl"), "weight": 1}]
    loader = _loader(srcs, tok, None, max_tokens=400, max_patches=None)
    counts = Counter()
    while sum(counts.values()) < 600:
        pack = next(loader)
        assert pack.pixel_values is None and pack.num_patches == 0
        counts.update(s for s, _ in pack.sample_ids)
    frac = counts[0] / sum(counts.values())
    assert abs(frac - 0.75) < 0.05, counts
    # webdataset + jsonl mixing follows the weights too
    srcs = [{"path": str(root / "train.jsonl"), "weight": 1},
            {"path": str(root / "shard-000.tar"), "weight": 1}]
    counts = Counter(s for p in _take(_loader(srcs, tok, proc), 20) for s, _ in p.sample_ids)
    assert 0.3 < counts[0] / sum(counts.values()) < 0.7, counts


# ------------------------------------------------------------------------------------------------------------
# Model-level: the pack loss is the token-weighted mean of the samples' losses
# ------------------------------------------------------------------------------------------------------------


def test_pack_loss_equals_weighted_sample_losses(data, tok, proc):
    import navil

    root, _ = data
    model = navil.load_model(CKPT)
    loader = _loader([str(root / "train.jsonl")], tok, proc, max_tokens=1500, max_patches=400)
    pack = next(p for p in loader if p.num_samples >= 3 and p.pixel_values is not None)
    with torch.no_grad():
        out = model(**pack.model_inputs(), return_logits=False)
        assert out.num_loss_tokens == pack.num_loss_tokens
        cu = pack.cu_seqlens.tolist()
        grid = pack.image_grid_thw
        total, weight, row, patch = 0.0, 0, 0, 0
        for i in range(pack.num_samples):
            ids = pack.input_ids[:, cu[i]:cu[i + 1]]
            labels = pack.labels[:, cu[i]:cu[i + 1]]
            n_rows = pack.grid_rows_per_sample[i]
            pv = thw = None
            if n_rows:
                thw = grid[row:row + n_rows]
                n_patch = int(thw.prod(1).sum())
                pv = pack.pixel_values[patch:patch + n_patch]
                row, patch = row + n_rows, patch + n_patch
            o = model(input_ids=ids, labels=labels, pixel_values=pv, image_grid_thw=thw, return_logits=False)
            total += float(o.loss) * o.num_loss_tokens
            weight += o.num_loss_tokens
    assert weight == pack.num_loss_tokens
    assert abs(float(out.loss) - total / weight) <= 1e-5
    assert math.isfinite(float(out.loss))


# ------------------------------------------------------------------------------------------------------------
# Conformance: a training sample tokenizes exactly like the official fixture's input_ids / answer-only labels
# ------------------------------------------------------------------------------------------------------------

_FIXTURES = sorted({p.name: p for root in (_HERE / "fixtures" / "official-tiny",
                                           _HERE.parents[1] / "shared" / "fixtures" / "official-tiny")
                    if root.is_dir() for p in root.iterdir() if (p / "inputs.safetensors").is_file()}.items())


@pytest.mark.parametrize("folder", [p for _, p in _FIXTURES], ids=[n for n, _ in _FIXTURES])
def test_matches_official_fixture_tokens(folder):
    from safetensors.torch import load_file

    inputs = load_file(str(folder / "inputs.safetensors"))
    tokenizer = load_tokenizer(folder)
    template = json.loads((folder / "config.json").read_text())["template"]
    grids, start = [], 0
    thw = inputs["image_grid_thw"].tolist()
    for n in inputs["num_scales"].tolist():
        grids.append([tuple(r) for r in thw[start:start + n]])
        start += n
    question = "<image>\n" * len(grids) + "What is in the image?"
    out = tokenize_conversation(tokenizer, template, [(question, "Colored shapes on a gradient.")], grids,
                                img_context_id=tokenizer.special_token_ids.img_context)
    assert out.input_ids == inputs["input_ids"][0].tolist()
    assert out.labels == inputs["labels_answer_only"][0].tolist()
    if tokenizer.add_bos_token:
        assert out.input_ids[0] == tokenizer.bos_token_id and out.labels[0] == IGNORE_INDEX
