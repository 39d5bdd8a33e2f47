"""Region grounding: token targets from labelled boxes, the loss, and the synthetic regions."""
import json
from types import SimpleNamespace

import pytest
import torch

from navil.data.synthetic import COLORS, SHAPES, make_sample
from navil.train.grounding import (
    EmbeddingGrounding,
    GroundingHeads,
    RegionGrounding,
    RegionTable,
    capture_visual_tokens,
)


def _head() -> RegionGrounding:
    return RegionGrounding(8, ["circle", "square", "CAT"])


def test_targets_label_tokens_inside_regions_and_pool_them():
    g = _head()
    # image 1: 4x6 patches -> 2x3 merge units; image 2: no regions
    grids = torch.tensor([[1, 4, 6], [1, 2, 2]])
    regions = [[{"box": [0.0, 0.0, 0.34, 0.5], "label": "square"},
                {"box": [0.5, 0.5, 1.0, 1.0], "label": "CAT"}], None]
    dense, members, owners, labels = g.targets(grids, regions, merge=2)
    bg = g.background
    # unit centres: x in (1/6, 1/2, 5/6), y in (1/4, 3/4)
    assert dense.tolist() == [1, bg, bg, bg, 2, 2, -100]
    assert labels.tolist() == [1, 2]
    assert sorted(zip(owners.tolist(), members.tolist())) == [(0, 0), (1, 4), (1, 5)]


def test_region_smaller_than_a_token_owns_the_token_under_its_centre():
    g = _head()
    dense, members, owners, _ = g.targets(torch.tensor([[1, 4, 4]]), [[{"box": [0.6, 0.1, 0.7, 0.2],
                                                                        "label": "circle"}]], merge=2)
    assert members.tolist() == [1] and owners.tolist() == [0]
    assert dense.tolist() == [g.background, 0, g.background, g.background]


def test_loss_trains_the_tokens_and_is_zero_without_regions():
    torch.manual_seed(0)
    g = _head()
    grids = torch.tensor([[1, 4, 6]])
    regions = [[{"box": [0.0, 0.0, 0.34, 0.5], "label": "square"}]]
    tokens = torch.randn(6, 8, requires_grad=True)
    loss = g(tokens, grids, regions, merge=2)
    loss.backward()
    assert loss.item() > 0 and tokens.grad.abs().sum() > 0
    assert g.pop_accuracy() in (0.0, 1.0) and g.pop_accuracy() is None
    assert g(tokens, grids, [None], merge=2).item() == 0.0
    with pytest.raises(KeyError):
        g(tokens, grids, [[{"box": [0, 0, 1, 1], "label": "unknown"}]], merge=2)


def test_grounding_heads_add_one_loss_per_region_field():
    torch.manual_seed(0)
    shape, color = _head(), RegionGrounding(8, ["red", "blue"], key="color")
    heads = GroundingHeads([shape, color])
    grids, tokens = torch.tensor([[1, 4, 6]]), torch.randn(6, 8)
    regions = [[{"box": [0.0, 0.0, 0.34, 0.5], "label": "square", "color": "red"},
                {"box": [0.5, 0.5, 1.0, 1.0], "label": "CAT"}]]  # no colour: left out of the colour head
    assert torch.allclose(heads(tokens, grids, regions, 2), shape(tokens, grids, regions, 2)
                          + color(tokens, grids, regions, 2))
    assert color.targets(grids, regions, 2)[3].tolist() == [0]
    heads.pop_accuracy()
    assert heads.pop_accuracy() is None
    heads(tokens, grids, regions, 2)
    logged = heads.pop_accuracy()
    assert logged.startswith("label ") and "  color " in logged


def test_capture_visual_tokens_hooks_the_connector_until_the_block_ends():
    model = torch.nn.Module()
    model.mlp1 = torch.nn.Linear(2, 3)
    with capture_visual_tokens(model) as store:
        model.mlp1(torch.zeros(4, 2))
        assert store["tokens"].shape == (4, 3)
    model.mlp1(torch.zeros(1, 2))
    assert store["tokens"].shape == (4, 3)  # the hook is gone


@pytest.mark.parametrize("category", ["shape", "count", "ocr", "chart"])
def test_synthetic_regions_match_the_drawn_scene(category):
    for i in range(5):
        s = make_sample("train", i, category, object_scale=2.0, canvas_fill=0.5 if category != "ocr" else None)
        regions = s.regions()
        assert regions and all(0 <= r["box"][0] < r["box"][2] <= 1.0001 and 0 <= r["box"][1] < r["box"][3] <= 1.0001
                                for r in regions)
        m = s.meta
        assert all(r["color"] in COLORS for r in regions)
        if category == "ocr":
            assert [r["label"] for r in regions] == [m["word"]] and regions[0]["color"] == m["color"]
        elif category == "chart":
            assert [r["label"] for r in regions] == [f"bar {v}" for v in m["bars"].values()]
            heights = [r["box"][3] - r["box"][1] for r in regions]
            values = list(m["bars"].values())
            assert all((a < b) == (va < vb) for a, va in zip(heights, values) for b, vb in zip(heights, values))
        else:
            assert [r["label"] for r in regions] == [o["shape"] for o in m["objects"]]
            assert all(r["label"] in SHAPES for r in regions)
            w, h = s.image.size
            for r, o in zip(regions, m["objects"]):
                x, y = (r["box"][0] + r["box"][2]) / 2 * w, (r["box"][1] + r["box"][3]) / 2 * h
                assert abs(x - o["x"]) < 1 and abs(y - o["y"]) < 1
                # the object's colour is drawn at its centre (every shape covers its centre)
                assert max(abs(a - b) for a, b in zip(s.image.getpixel((round(x), round(y))),
                                                      _palette(o["color"]))) < 40


def _palette(color: str) -> tuple[int, int, int]:
    from navil.data.synthetic._render import PALETTE

    return PALETTE[color]


def test_region_table_maps_pack_ids_to_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"regions": [{"box": [0, 0, 1, 1], "label": "CAT"}]}, {}, {"regions": None}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    table = RegionTable([path])

    pack = SimpleNamespace(sample_ids=[(0, 1), (0, 0), (0, 2)], grid_rows_per_sample=[1, 2, 1])
    assert table.for_pack(pack) == [None, None, None, None]
    pack.grid_rows_per_sample = [1, 1, 1]
    assert table.for_pack(pack) == [None, rows[0]["regions"], None]


def _word_grounding(embedding: torch.nn.Embedding) -> EmbeddingGrounding:
    # words "red_square" -> id 3, "blue_circle" -> id 5; background id 7; regions without a colour are left out
    return EmbeddingGrounding(embedding, {"red_square": 3, "blue_circle": 5}, 7,
                              lambda r: f"{r['color']}_{r['label']}" if "color" in r else None)


def test_embedding_grounding_pulls_tokens_onto_their_words_embedding():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(10, 8)
    g = _word_grounding(embedding)
    assert list(g.parameters()) == []  # the LLM's table is read, not owned (nor handed to an optimizer twice)
    grids = torch.tensor([[1, 4, 6]])  # 2x3 tokens
    regions = [[{"box": [0.0, 0.0, 0.34, 0.5], "label": "square", "color": "red"},
                {"box": [0.5, 0.5, 1.0, 1.0], "label": "CAT"}]]  # no colour: not an object word, background
    on_words = embedding.weight[[3, 7, 7, 7, 7, 7]].detach().clone().requires_grad_(True)
    off_words = embedding.weight[[5, 3, 3, 3, 3, 3]].detach().clone().requires_grad_(True)
    good, bad = g(on_words, grids, regions, 2), g(off_words, grids, regions, 2)
    assert good.item() < bad.item()
    assert g.pop_accuracy() == "word 0.50" and g.pop_accuracy() is None  # token 0: right, then wrong
    bad.backward()
    assert off_words.grad.abs().sum() > 0 and embedding.weight.grad is None
    assert g(on_words, grids, [None], 2).item() == 0.0


def test_embedding_grounding_weights_the_background_down():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(10, 8)
    g = _word_grounding(embedding)
    grids = torch.tensor([[1, 2, 4]])  # two tokens: the object's, then background
    regions = [[{"box": [0.0, 0.0, 0.5, 1.0], "label": "circle", "color": "blue"}]]
    tokens = torch.randn(2, 8)
    words = torch.nn.functional.normalize(embedding.weight[[3, 5, 7]].detach(), dim=-1)
    logits = 10.0 * torch.nn.functional.normalize(tokens, dim=-1) @ words.T
    each = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2]), reduction="none")
    expected = (each[0] + 0.2 * each[1]) / 1.2
    assert g(tokens, grids, regions, 2).item() == pytest.approx(expected.item(), rel=1e-5)
