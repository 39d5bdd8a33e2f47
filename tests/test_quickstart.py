"""`navil quickstart` end to end on a tiny budget: results.json schema, the model folder loads and answers
through `navil chat`, and a second run reuses the generated data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from navil.cli import main
from navil.data.synthetic import CATEGORIES, SHAPES


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_word_tokenizer_single_token_answers(tmp_path):
    from navil.data.synthetic import answer_set
    from navil.processing.tokenizer import load_tokenizer
    from navil.quickstart_data import (
        BACKGROUND_WORD,
        object_words,
        synthetic_vocabulary,
        write_word_tokenizer,
    )

    write_word_tokenizer(tmp_path / "tok", synthetic_vocabulary(0, n=300))
    tok = load_tokenizer(tmp_path / "tok", require_navil_tokens=True)
    unk = tok.token_to_id("[UNK]")
    for c in CATEGORIES:
        for a in answer_set(c):
            ids = tok.encode(a, add_special_tokens=False)
            assert len(ids) == 1 and ids[0] != unk, (c, a, ids)
            assert tok.decode(ids, skip_special_tokens=True) == a
    for word in (*object_words(), BACKGROUND_WORD):  # "red_star": one token, as the grounding needs
        ids = tok.encode(word, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] != unk, word
    ids = tok.encode("<|im_start|>user\nWhat color is the star? Answer with a single word.<|im_end|>",
                     add_special_tokens=False)
    assert unk not in ids and ids[0] == tok.special_token_ids.im_start and ids[-1] == tok.special_token_ids.im_end


def test_object_word_scenes_name_every_object_and_hold_the_answer(tmp_path):
    from navil.data.synthetic import make_sample
    from navil.quickstart_data import BACKGROUND_WORD, object_word, write_object_words_text

    path = write_object_words_text(tmp_path / "a.jsonl", 40, seed=0, start=11 * 10**6, max_objects=3)
    again = write_object_words_text(tmp_path / "b.jsonl", 40, seed=0, start=11 * 10**6, max_objects=3)
    assert Path(path).read_text() == Path(again).read_text()  # same seed, same text
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        sample = make_sample("train", int(row["id"].split("-")[1]), seed=0, categories=("color", "shape"),
                             max_objects=3)
        scene, question = row["conversations"][0]["value"].split("\n")
        words = scene.split()
        objects = {object_word(o["color"], o["shape"]) for o in sample.meta["objects"]}
        assert set(words) - {BACKGROUND_WORD} == objects
        assert all(2 <= words.count(w) <= 4 for w in objects)
        answer = row["conversations"][1]["value"]
        assert question.startswith(sample.question) and answer == sample.answer
        asked = set(question.replace("?", " ").split())
        pairs = [w.split("_") for w in objects]  # (colour, shape): the scene alone answers the question
        named = [c for c, sh in pairs if sh in asked] if row["category"] == "color" else \
            [sh for c, sh in pairs if c in asked]
        assert named == [answer], (scene, question, answer)


def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--minutes", "0.3", "--data-scale", "0.02", "--examples", "2"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"overall_accuracy", "categories", "minutes", "model_dir", "seed"}
    assert isinstance(res["overall_accuracy"], float) and 0.0 <= res["overall_accuracy"] <= 1.0
    assert res["seed"] == 0 and res["minutes"] > 0
    assert set(res["categories"]) == set(CATEGORIES)
    for name, c in res["categories"].items():
        assert 0.0 <= c["accuracy"] <= 1.0 and c["n"] > 0 and 0.0 < c["chance"] < 1.0, name
    for name in ("color", "shape", "count", "position"):  # the breakdown by objects in the scene adds up
        by = res["categories"][name]["by_objects"]
        assert sum(d["n"] for d in by.values()) == res["categories"][name]["n"]
        hits = sum(d["accuracy"] * d["n"] for d in by.values())
        assert abs(hits - res["categories"][name]["accuracy"] * res["categories"][name]["n"]) < 1e-3
    assert "by_objects" not in res["categories"]["ocr"]
    assert (out / "curve.jsonl").is_file() and (out / "examples.png").is_file()
    # the learning curve also follows colour and shape on single objects, outside "overall"
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    for rec in curve:
        assert {"color@1", "shape@1"} <= set(rec["categories"])
        main_set = [rec["categories"][c] for c in CATEGORIES]  # balanced validation set: equal counts
        assert abs(rec["overall"] - sum(main_set) / len(main_set)) < 1e-3
    text = capsys.readouterr().out
    assert "category" in text and "overall" in text and "stage 1" in text and "stage 2" in text
    assert "vision warm-up: done" in text and "region acc word" in text  # the word grounding ran

    # the text LLM is a plain HF folder, the trained model a navil folder that loads and answers
    assert json.loads((out / "llm" / "config.json").read_text())["model_type"] == "qwen3"
    import navil

    model = navil.load_model(res["model_dir"])
    assert model.config.system_message == ""
    img = next((out / "data" / "val" / "images").glob("*.png"))
    assert main(["chat", "--model", res["model_dir"], "--image", str(img), "--max-new-tokens", "3",
                 "What color is the star? Answer with a single word."]) == 0
    capsys.readouterr()  # the answer of a barely trained model may be any word (or empty)

    # a second run reuses the generated data (no file rewritten) and, with the same seed, gets the same accuracy
    before = _mtimes(out / "data")
    assert main(args + ["--seed", "0"]) == 0
    assert _mtimes(out / "data") == before
    assert "reusing the synthetic data" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["categories"] == res["categories"] and again["overall_accuracy"] == res["overall_accuracy"]


def test_quickstart_with_region_grounding(tmp_path, capsys):
    from navil.quickstart import Preset, run_quickstart

    preset = Preset(grounding="regions", share_vision_warmup=0.0)
    res = run_quickstart(tmp_path / "qs", minutes=0.1, data_scale=0.02, preset=preset, examples=0)
    rows = [json.loads(line) for line in Path(res["data"]["s1_easy"]).read_text().splitlines()]
    assert all(r["regions"] and r["regions"][0]["label"] in SHAPES for r in rows)  # one object each
    out = capsys.readouterr().out
    logged = [line for line in out.splitlines() if "region acc label" in line]
    assert any("stage 1 step" in line for line in logged) and any("stage 2 step" in line for line in logged)
    assert "vision warm-up: done" not in out


def test_quickstart_rejects_an_unknown_grounding(tmp_path):
    from navil.errors import ConfigError
    from navil.quickstart import Preset, run_quickstart

    with pytest.raises(ConfigError, match="grounding"):
        run_quickstart(tmp_path / "qs", minutes=0.05, data_scale=0.02, preset=Preset(grounding="boxes"), examples=0)
