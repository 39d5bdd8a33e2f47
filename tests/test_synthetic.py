"""Tests for navil.data.synthetic: determinism, splits, answer sets and balance, captions, exports."""
from __future__ import annotations

import base64
import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from navil.data import synthetic as syn
from navil.data.synthetic import _scenes
from navil.data.synthetic._render import PALETTE, SHAPE_PLURALS
from navil.errors import NavilError


def _key(s: syn.SyntheticSample):
    return (s.image.size, s.image.tobytes(), s.category, s.question, s.answer, s.caption, tuple(s.turns))


def test_determinism_same_seed_same_bytes():
    for cat in syn.CATEGORIES:
        a = syn.make_sample("train", 7, cat, seed=3, questions_per_image=3)
        b = syn.make_sample("train", 7, cat, seed=3, questions_per_image=3)
        assert _key(a) == _key(b)
    stream_a = [_key(s) for s in syn.iter_samples("val", 30, seed=1)]
    stream_b = [_key(s) for s in syn.iter_samples("validation", 30, seed=1)]
    assert stream_a == stream_b
    # Optional pixel noise is seeded too.
    n1 = syn.make_sample("test", 3, "shape", seed=0, noise=4.0)
    n2 = syn.make_sample("test", 3, "shape", seed=0, noise=4.0)
    clean = syn.make_sample("test", 3, "shape", seed=0)
    assert n1.image.tobytes() == n2.image.tobytes() != clean.image.tobytes()
    assert (n1.question, n1.answer, n1.caption) == (clean.question, clean.answer, clean.caption)
    # Different seed or index gives different samples.
    assert _key(syn.make_sample("train", 7, "color", seed=4)) != _key(syn.make_sample("train", 7, "color", seed=3))
    assert _key(syn.make_sample("train", 8, "color", seed=3)) != _key(syn.make_sample("train", 7, "color", seed=3))


def test_forced_category_matches_stream_and_turns_do_not_change_image():
    for s in syn.iter_samples("train", 24, seed=5):
        forced = syn.make_sample("train", s.index, s.category, seed=5)
        assert _key(forced) == _key(s)
        multi = syn.make_sample("train", s.index, s.category, seed=5, questions_per_image=4)
        assert multi.image.tobytes() == s.image.tobytes() and multi.turns[0] == s.turns[0]


def test_splits_never_share_seeds():
    n = 5000
    seeds = {sp: {syn.sample_seed(sp, i, seed=0) for i in range(n)} for sp in syn.SPLITS}
    assert all(len(v) == n for v in seeds.values())
    assert not seeds["train"] & seeds["val"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]
    # Across base seeds too.
    assert not {syn.sample_seed("train", i, 0) for i in range(n)} & {syn.sample_seed("train", i, 1) for i in range(n)}
    imgs = {sp: {syn.make_sample(sp, i, "ocr").image.tobytes() for i in range(40)} for sp in syn.SPLITS}
    assert not imgs["train"] & imgs["test"] and not imgs["train"] & imgs["val"]
    with pytest.raises(NavilError):
        syn.sample_seed("training", 0)
    with pytest.raises(NavilError):
        syn.sample_seed("train", -1)


@pytest.mark.parametrize("cat", syn.CATEGORIES)
def test_answers_in_declared_set(cat):
    answers = set(syn.CATEGORY_ANSWERS[cat])
    for s in syn.iter_samples("train", 120, seed=2, categories=[cat], questions_per_image=3):
        assert s.category == cat and s.answer in answers, (s.question, s.answer)
        assert s.turns[0] == (s.category, s.question, s.answer)
        for c, q, a in s.turns:  # secondary turns are valid questions of their own category
            assert a in syn.answer_set(c), (c, q, a)
        assert len({q for _, q, _ in s.turns}) == len(s.turns)


def test_no_turn_answer_is_named_by_an_earlier_question():
    # "What color is the star?" must not precede "What shape is the red object?": the text would give it away
    samples = list(syn.iter_samples("train", 300, seed=0, questions_per_image=8))
    for s in samples:
        for k, (_, _, answer) in enumerate(s.turns):
            earlier = " ".join(q for _, q, _ in s.turns[:k]).lower().replace("?", " ").split()
            plural = SHAPE_PLURALS.get(answer)
            assert answer.lower() not in earlier and plural not in earlier, s.turns
    assert sum(len(s.turns) >= 4 for s in samples) > 100  # the rule still leaves several questions per image


def test_extra_turns_stay_within_the_curriculum_categories():
    # a single-object colour/shape stage must not be padded with "How many objects are there?" -> "1"
    easy = list(syn.iter_samples("train", 100, seed=0, questions_per_image=3, **syn.CURRICULUM["easy"]))
    assert all(c in ("color", "shape") for s in easy for c, _, _ in s.turns)
    medium = list(syn.iter_samples("train", 100, seed=0, questions_per_image=3, **syn.CURRICULUM["medium"]))
    assert sum(len(s.turns) > 1 for s in medium) > 50


@pytest.mark.parametrize("cat", ["color", "shape", "count", "position", "ocr"])
def test_answer_balance(cat):
    n = 600
    counts = Counter(s.answer for s in syn.iter_samples("train", n, seed=0, categories=[cat]))
    k = len(syn.CATEGORY_ANSWERS[cat])
    assert set(counts) == set(syn.CATEGORY_ANSWERS[cat])
    expected = n / k
    for a, c in counts.items():
        assert 0.5 * expected < c < 1.6 * expected, (a, c, expected)


def test_chart_balance_by_question_type():
    letters, values = Counter(), Counter()
    for s in syn.iter_samples("train", 600, seed=0, categories=["chart"]):
        (letters if s.question.startswith("Which") else values)[s.answer] += 1
    assert set(letters) == set(_scenes.CHART_LETTERS) and set(values) == {"1", "2", "3", "4", "5"}
    for counter in (letters, values):
        expected = sum(counter.values()) / 5
        assert all(0.5 * expected < c < 1.6 * expected for c in counter.values()), counter


def _bar_pixels(s: syn.SyntheticSample) -> None:
    """Each bar is drawn exactly `value` units tall (checked on the pixels) and the letter row fits."""
    img, m = np.asarray(s.image).astype(int), s.meta
    plot, rgb = m["plot"], np.array(PALETTE[m["color"]])
    assert plot["base_y"] + 3 + plot["label_px"] <= s.image.height
    for x, v in zip(plot["bar_x"], m["bars"].values()):
        inside = img[round(plot["base_y"] - (v - 0.5) * plot["unit"]), round(x)]
        above = img[round(plot["base_y"] - (v + 0.5) * plot["unit"]), round(x)]
        assert np.abs(inside - rgb).max() <= 12 and np.abs(above - rgb).max() > 60


@pytest.mark.parametrize(("scale", "fill"), [(1.0, None), (2.0, None), (2.0, 0.3), (1.0, 0.5)])
def test_ground_truth_consistency(scale, fill):
    for s in syn.iter_samples("test", 200, seed=0, questions_per_image=6, object_scale=scale, canvas_fill=fill):
        m = s.meta
        if m["scene"] == "chart":
            _bar_pixels(s)
            bars = m["bars"]
            for c, q, a in s.turns:
                if q.startswith("What is the value"):
                    assert str(bars[q.rstrip("?").split()[-1]]) == a
                else:
                    assert max(bars.values()) == bars[a] and list(bars.values()).count(bars[a]) == 1
        elif m["scene"] == "text":
            assert s.answer == m["word"]
            x0, y0, x1, y1 = m["box"]
            assert 0 <= x0 < x1 <= s.image.width and 0 <= y0 < y1 <= s.image.height
        else:
            objs = m["objects"]
            w, h = s.image.size
            for o in objs:  # objects lie inside the image and are at least 22 px * scale
                assert o["size"] >= round(22 * scale)
                assert o["size"] / 2 <= o["x"] <= w - o["size"] / 2 and o["size"] / 2 <= o["y"] <= h - o["size"] / 2
            for c, q, a in s.turns:
                if c == "count" and q == "How many objects are there?":
                    assert a == str(len(objs))
                if c == "color" and m["scene"] == "objects":
                    shape = q.rstrip("?").split()[-1]
                    assert [o["color"] for o in objs if o["shape"] == shape] == [a]
                if c == "position":
                    words = q.rstrip("?").split()
                    ca, sa, cb, sb = words[3], words[4], words[-2], words[-1]
                    oa = next(o for o in objs if (o["color"], o["shape"]) == (ca, sa))
                    ob = next(o for o in objs if (o["color"], o["shape"]) == (cb, sb))
                    dx, dy = oa["x"] - ob["x"], oa["y"] - ob["y"]
                    expect = {"left": dx < 0, "right": dx > 0, "above": dy < 0, "below": dy > 0}[a]
                    assert expect and (abs(dx) >= 2 * abs(dy) if a in ("left", "right") else abs(dy) >= 2 * abs(dx))


def test_caption_mentions_every_object():
    for s in syn.iter_samples("train", 200, seed=4):
        m = s.meta
        if m["scene"] == "objects":
            objs = m["objects"]
            for o in objs:
                assert f"{o['color']} {o['shape']}" in s.caption, (s.caption, o)
            assert s.caption.count(" at the ") + s.caption.count(" on the ") + s.caption.count(" in the ") == len(objs)
            if len(objs) > 1:
                assert s.caption.startswith(f"{len(objs)} objects:")
        elif m["scene"] == "text":
            assert m["word"] in s.caption and m["color"] in s.caption
        else:
            assert all(f"{a} {v}" in s.caption for a, v in m["bars"].items())
        assert " a orange" not in s.caption and not s.caption.startswith("a orange")
        # A caption carries several times the label tokens of one answer.
        assert len(s.caption.split()) >= 3 * len(s.answer.split())


def test_object_scale_enlarges_what_is_drawn_not_the_canvas():
    def stats(scale: float) -> tuple[float, float, float, float]:
        samples = list(syn.iter_samples("train", 240, seed=1, object_scale=scale))
        objs = [o["size"] for s in samples if s.meta["scene"] == "objects" for o in s.meta["objects"]]
        fonts = [s.meta["font_size"] for s in samples if s.meta["scene"] == "text"]
        units = [s.meta["plot"]["unit"] for s in samples if s.meta["scene"] == "chart"]
        area = np.mean([s.image.width * s.image.height for s in samples if s.meta["scene"] == "objects"])
        return np.mean(objs), np.mean(fonts), np.mean(units), area

    one, two = stats(1.0), stats(2.0)
    # multi-object scenes are capped by the 30% coverage rule, charts by the canvas height
    assert 1.4 < two[0] / one[0] <= 2.0 and 1.6 < two[1] / one[1] <= 2.0 and 1.3 < two[2] / one[2] <= 2.0
    assert 0.8 < two[3] / one[3] < 1.5  # same canvas range; the layout only grows it when objects need room
    for bad in (0.1, 2.5):
        with pytest.raises(NavilError, match="object_scale"):
            syn.make_sample("train", 0, object_scale=bad)


def test_canvas_fill_sizes_the_canvas_to_its_objects():
    def coverage(fill: float | None) -> tuple[dict[bool, list[float]], list[tuple[int, int]]]:
        cover: dict[bool, list[float]] = {True: [], False: []}
        sizes = []
        for s in syn.iter_samples("train", 300, seed=2, object_scale=2.0, canvas_fill=fill):
            w, h = s.image.size
            if s.meta["scene"] == "objects":
                sizes.append((w, h))
                objs = s.meta["objects"]
                cover[len(objs) == 1].append(sum(o["size"] ** 2 for o in objs) / (w * h))
        return cover, sizes

    loose, _ = coverage(None)
    fitted, sizes = coverage(0.3)
    assert np.mean(loose[True]) < 0.2 and 0.22 < np.mean(fitted[True]) < 0.4  # one object: ~13% -> ~30%
    assert 0.22 < np.mean(fitted[False]) < 0.4
    assert all(64 <= w <= 224 and 64 <= h <= 224 and w * h <= 150 * 256 for w, h in sizes)
    ratios = [w / h for w, h in sizes]
    assert min(ratios) < 0.6 and max(ratios) > 1.6 and len(set(sizes)) > 100  # still varied
    for bad in (0.0, 0.9):
        with pytest.raises(NavilError, match="canvas_fill"):
            syn.make_sample("train", 0, canvas_fill=bad)


def test_varied_sizes_and_aspect_ratios():
    sizes = [s.image.size for s in syn.iter_samples("train", 300, seed=0)]
    assert all(64 <= w <= 224 and 64 <= h <= 224 for w, h in sizes)
    assert all(w * h <= 150 * 256 for w, h in sizes)
    ratios = [w / h for w, h in sizes]
    assert min(ratios) < 0.6 and max(ratios) > 1.6
    assert len(set(sizes)) > 150
    assert all(s.image.mode == "RGB" for s in syn.iter_samples("train", 20, seed=0))


def test_chance_values():
    assert syn.CATEGORY_CHANCE == pytest.approx(
        {"color": 1 / 6, "shape": 1 / 5, "count": 1 / 5, "position": 1 / 4, "ocr": 1 / 16, "chart": 1 / 5})
    for c in syn.CATEGORIES:
        if c != "chart":
            assert syn.CATEGORY_CHANCE[c] == pytest.approx(1 / len(syn.CATEGORY_ANSWERS[c]))
    assert syn.category_chance("count", max_objects=3) == pytest.approx(1 / 3)
    assert syn.answer_set("count", max_objects=3) == ("1", "2", "3")


def test_curriculum_knobs():
    easy = list(syn.iter_samples("train", 60, seed=0, **syn.CURRICULUM["easy"]))
    assert {s.category for s in easy} == {"color", "shape"}
    assert all(len(s.meta["objects"]) == 1 for s in easy)
    med = list(syn.iter_samples("train", 120, seed=0, **syn.CURRICULUM["medium"]))
    assert all(len(s.meta["objects"]) <= 4 for s in med)  # count scenes may add one distractor
    assert {s.answer for s in med if s.category == "count"} <= {"1", "2", "3"}
    weighted = Counter(s.category for s in syn.iter_samples("train", 300, seed=0, weights={"color": 3, "ocr": 1},
                                                             categories=["color", "ocr"]))
    assert weighted["color"] > 2 * weighted["ocr"] > 0
    balanced = Counter(s.category for s in syn.iter_samples("train", 60, seed=0, balanced=True))
    assert set(balanced.values()) == {10}
    multi = list(syn.iter_samples("train", 40, seed=0, questions_per_image=3))
    assert sum(len(s.turns) == 3 for s in multi) >= 25
    crowded = list(syn.iter_samples("train", 60, seed=0, categories=["count"], max_objects=12))
    assert max(len(s.meta["objects"]) for s in crowded) > 6
    assert {s.answer for s in crowded} <= set(syn.CATEGORY_ANSWERS["count"])
    with pytest.raises(NavilError):
        syn.make_sample("train", 0, "colour")
    with pytest.raises(NavilError):
        syn.make_sample("train", 0, max_objects=0)
    with pytest.raises(NavilError):
        list(syn.iter_samples("train", 2, weights={"ocr": 1.0}, categories=["color"]))


def test_export_jsonl_round_trip(tmp_path: Path):
    path = syn.export_jsonl(tmp_path, "train", 12, seed=0, mode="qa", questions_per_image=2)
    lines = path.read_text().splitlines()
    assert path.parent == tmp_path and len(lines) == 12
    for line in lines:
        rec = json.loads(line)
        assert not Path(rec["image"]).is_absolute() and rec["image"].startswith("images/")
        img = Image.open(tmp_path / rec["image"])
        assert img.size == (rec["width"], rec["height"])
        conv = rec["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2) and len(conv) >= 2
        assert conv[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in conv) == 1
        assert all(t["value"].endswith(syn.SHORT_ANSWER_PROMPT) for t in conv[0::2])
    first = json.loads(lines[0])
    s0 = syn.make_sample("train", 0, seed=0)
    assert first["conversations"][1]["value"] == s0.answer
    assert Image.open(tmp_path / first["image"]).convert("RGB").tobytes() == s0.image.tobytes()

    cap = syn.export_jsonl(tmp_path, "train", 6, seed=0, mode="caption")
    for line in cap.read_text().splitlines():
        conv = json.loads(line)["conversations"]
        assert conv[0]["value"] == "<image>\n" + syn.CAPTION_PROMPT and len(conv) == 2
    mixed = syn.export_jsonl(tmp_path, "train", 40, seed=0, mode="mixed")
    kinds = Counter(json.loads(line)["conversations"][0]["value"].endswith(syn.CAPTION_PROMPT)
                    for line in mixed.read_text().splitlines())
    assert kinds[True] > 5 and kinds[False] > 5
    assert len(list((tmp_path / "images").glob("*.png"))) == 40
    with pytest.raises(NavilError):
        syn.export_jsonl(tmp_path, "train", 1, mode="dialog")


def test_export_tsv_readable(tmp_path: Path):
    path = syn.export_tsv(tmp_path / "bench.tsv", 18, seed=0)
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert tuple(rows[0]) == syn.TSV_COLUMNS and len(rows) == 19
    header = rows[0]
    for i, row in enumerate(rows[1:]):
        rec = dict(zip(header, row))
        assert int(rec["index"]) == i and rec["split"] == "test"
        img = Image.open(io.BytesIO(base64.b64decode(rec["image"])))
        img.load()
        assert img.format == "PNG" and 64 <= img.width <= 224
        assert rec["question"].endswith(syn.SHORT_ANSWER_PROMPT)
        assert rec["answer"] in syn.CATEGORY_ANSWERS[rec["category"]]
        objects = syn.make_sample("test", i, rec["category"], seed=0).meta.get("objects", [])
        assert int(rec["objects"]) == len(objects) and (rec["category"] in ("ocr", "chart")) == (not objects)
    assert Counter(dict(zip(header, r))["category"] for r in rows[1:]) == Counter({c: 3 for c in syn.CATEGORIES})
    back = syn.read_tsv(path)
    s5 = syn.make_sample("test", 5, back[5]["category"], seed=0)
    assert back[5]["image"].tobytes() == s5.image.tobytes() and back[5]["answer"] == s5.answer
    # Same question text as the training QA turns.
    assert back[5]["question"] == syn.sample_conversation(s5)[0]["value"].removeprefix("<image>\n")
