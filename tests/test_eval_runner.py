"""`navil eval` / navil.eval.runner: generation + cache + resume + scoring, on the random tiny checkpoint."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import navil
from navil.cli import main
from navil.data import synthetic as syn
from navil.eval import runner
from navil.eval.scoring import BENCHMARKS, get_benchmark, score
from navil.eval.synthetic_bench import NAME as SYN
from navil.eval.synthetic_bench import normalize, synthetic_scorer
from navil.eval.tsv import read_tsv

MODEL = Path(__file__).resolve().parent / "fixtures" / "official-tiny" / "qwen3-ve-tiny"
MAX_NEW = 4


@pytest.fixture(autouse=True)
def _one_thread():
    # Intra-op threads only cost time for this tiny model (and can be very slow on a busy machine).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny():
    return navil.load_model(MODEL), navil.load_tokenizer(MODEL)


def _png_b64(color, size=(32, 32)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


GOOD = [  # index, colour, size, question, answer, category
    (0, "red", (32, 32), "What color is the square?", "red", "color"),
    (1, "blue", (48, 32), "What color is the square?", "blue", "color"),
    (2, "green", (32, 48), "What shape is the green object?", "square", "shape"),
    (3, "yellow", (32, 32), "How many objects are there?", "1", "count"),
    (4, "purple", (64, 32), "What word is written in the image?", "CAT", "ocr"),
    (5, "orange", (32, 32), "Which bar is the tallest?", "B", "chart"),
    (6, "red", (32, 64), "How many objects are there?", "2", "count"),
]
LONG_INDEX = 9  # a prompt longer than the tiny model's 4096-token context


def _write_tsv(path: Path, with_bad: bool = True) -> Path:
    rows = [[i, _png_b64(c, s), q, a, cat] for i, c, s, q, a, cat in GOOD]
    if with_bad:
        rows.insert(2, [7, _png_b64("red"), "What color?", "", "color"])  # missing answer
        rows.insert(4, [8, "@@not*base64@@" * 8, "What color?", "red", "color"])  # broken base64
        rows.append([LONG_INDEX, _png_b64("blue"), "x" * 5000, "blue", "color"])
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["index", "image", "question", "answer", "category"])
        w.writerows(rows)
    return path


def _preds(path: Path) -> dict:
    return {json.loads(line)["index"]: json.loads(line) for line in path.read_text().splitlines() if line}


class _CountingGenerate:
    """Wraps model.generate, counting prompts; raises KeyboardInterrupt on call number `fail_on` if set."""

    def __init__(self, model, fail_on: int | None = None):
        self.inner, self.fail_on, self.calls, self.prompts = model.generate, fail_on, 0, 0

    def __call__(self, input_ids, **kw):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt
        cu = kw.get("cu_seqlens")
        self.prompts += len(cu) - 1 if cu is not None else input_ids.shape[0]
        return self.inner(input_ids, **kw)


def test_synthetic_benchmark_is_registered_with_chance():
    spec = get_benchmark(SYN)
    assert spec.kind == "custom" and spec.scorer is synthetic_scorer and SYN in BENCHMARKS
    assert normalize("  Red. ") == "red" and normalize("FISH!") == "fish" and normalize(None) == ""


def test_synthetic_scorer_per_category_accuracy_and_chance(tmp_path):
    tsv = syn.export_tsv(tmp_path / "syn.tsv", 12, seed=3)  # balanced: 2 per category
    rows = read_tsv(tsv).rows
    preds = {}
    for k, r in enumerate(rows):
        # first of each category right (with case/punctuation noise), second wrong
        preds[r["index"]] = f" {r['answer'].upper()}." if k < 6 else "zebra"
    res = score(SYN, tsv, preds)
    assert res["score"] == pytest.approx(50.0) and res["n"] == 12 and res["status"] == "ok"
    assert set(res["categories"]) == set(syn.CATEGORIES)
    for cat in syn.CATEGORIES:
        assert res["categories"][cat] == pytest.approx(50.0)
        assert res["chance"][cat] == pytest.approx(100.0 * syn.category_chance(cat))
        d = res["category_details"][cat]
        assert d["n"] == 2 and d["correct"] == 1 and d["above_chance"] == pytest.approx(50.0 - d["chance"])
    assert res["chance_overall"] == pytest.approx(100.0 * sum(syn.CATEGORY_CHANCE.values()) / 6)
    # a missing prediction is a miss
    res2 = score(SYN, tsv, {rows[0]["index"]: rows[0]["answer"]})
    assert res2["n_missing"] == 11 and res2["score"] == pytest.approx(100.0 / 12)


def test_cli_end_to_end_files_summary_malformed_and_context_error(tmp_path, capsys):
    tsv = _write_tsv(tmp_path / f"{SYN}_mini.tsv")  # benchmark guessed from the file name
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--model",
            str(MODEL),
            "--benchmark",
            str(tsv),
            "--out",
            str(out),
            "--batch-size",
            "3",
            "--max-new-tokens",
            str(MAX_NEW),
            "--no-progress",
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    for name in ("predictions.jsonl", "summary.json", "summary.md", "run_config.json"):
        assert (out / name).is_file()
    # malformed rows are reported with their index and skipped
    assert "index 7" in cap.err and "missing answer" in cap.err
    assert "index 8" in cap.err and "base64" in cap.err
    summary = json.loads((out / "summary.json").read_text())
    assert {m["index"] for m in summary["malformed"]} == {7, 8} and summary["n_malformed"] == 2
    # the over-long prompt is an error for that sample only
    assert summary["n_errors"] == 1 and summary["errors"][0]["index"] == LONG_INDEX
    assert "context" in summary["errors"][0]["error"]
    preds = _preds(out / "predictions.jsonl")
    assert list(preds) == [0, 1, 2, 3, 4, 5, 6, LONG_INDEX]  # TSV order, malformed rows absent
    assert preds[LONG_INDEX]["prediction"] is None and "context" in preds[LONG_INDEX]["error"]
    for i, _c, _s, _q, a, cat in GOOD:
        rec = preds[i]
        assert isinstance(rec["prediction"], str) and rec["answer"] == a and rec["category"] == cat
        assert rec["hit"] == (normalize(rec["prediction"]) == normalize(a))
    # summary == score() on the saved predictions
    expected = score(SYN, tsv, {i: r["prediction"] for i, r in preds.items()})
    assert summary["result"] == runner._jsonable(expected)
    assert summary["benchmark"] == SYN and summary["score"] == expected["score"]
    assert summary["result"]["n_missing"] == 1 and summary["result"]["missing"] == [LONG_INDEX]
    assert summary["model"] == str(MODEL) and summary["limit"] is None
    assert summary["config"]["batch_size"] == 3 and summary["config"]["max_new_tokens"] == MAX_NEW
    assert summary["versions"]["torch"] == torch.__version__ and summary["versions"]["navil"]
    # the table is printed and saved
    md = (out / "summary.md").read_text()
    assert md in cap.out and "| benchmark |" in md and "| category | score | chance | n |" in md


def test_batched_predictions_equal_one_by_one(tiny, tmp_path):
    model, tok = tiny
    tsv = _write_tsv(tmp_path / "d.tsv")
    s3 = runner.evaluate(
        model,
        tok,
        SYN,
        tsv,
        tmp_path / "b3",
        batch_size=3,
        max_new_tokens=MAX_NEW,
        progress=False,
        echo=False,
    )
    s1 = runner.evaluate(
        model,
        tok,
        SYN,
        tsv,
        tmp_path / "b1",
        batch_size=1,
        max_new_tokens=MAX_NEW,
        progress=False,
        echo=False,
    )
    p3, p1 = _preds(tmp_path / "b3" / "predictions.jsonl"), _preds(tmp_path / "b1" / "predictions.jsonl")
    assert p3 == p1 and len(p1) == len(GOOD) + 1
    assert s3["result"] == s1["result"]
    # and equal to model.chat on the same question/image
    row = read_tsv(tsv).by_index()[1]
    img = Image.open(io.BytesIO(base64.b64decode(row["image"])))
    assert p1[1]["prediction"] == model.chat(
        tok, images=[img], question=row["question"], max_new_tokens=MAX_NEW
    )


def test_resume_skips_finished_samples(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    tsv = _write_tsv(tmp_path / "d.tsv", with_bad=False)
    out = tmp_path / "out"
    counter = _CountingGenerate(model)
    monkeypatch.setattr(model, "generate", counter)
    s = runner.evaluate(
        model, tok, SYN, tsv, out, limit=4, batch_size=2, max_new_tokens=MAX_NEW, progress=False, echo=False
    )
    assert counter.prompts == 4 and s["n_selected"] == 4 and s["limit"] == 4 and s["result"]["n"] == 4
    assert s["result"]["n_missing"] == 0  # scored against the first 4 rows only
    first = _preds(out / "predictions.jsonl")
    assert list(first) == [0, 1, 2, 3]

    counter.prompts = 0
    s = runner.evaluate(
        model, tok, SYN, tsv, out, batch_size=2, max_new_tokens=MAX_NEW, progress=False, echo=False
    )
    assert counter.prompts == len(GOOD) - 4
    assert s["timing"]["cached"] == 4 and s["timing"]["generated"] == len(GOOD) - 4
    full = _preds(out / "predictions.jsonl")
    assert list(full) == [r[0] for r in GOOD]
    assert all(full[i]["prediction"] == first[i]["prediction"] for i in range(4))
    assert s["result"] == runner._jsonable(score(SYN, tsv, {i: r["prediction"] for i, r in full.items()}))

    # everything cached: nothing is generated again
    counter.prompts = 0
    runner.evaluate(
        model, tok, SYN, tsv, out, batch_size=2, max_new_tokens=MAX_NEW, progress=False, echo=False
    )
    assert counter.prompts == 0


def test_interrupted_run_resumes_without_regenerating(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    tsv = _write_tsv(tmp_path / "d.tsv", with_bad=False)
    out = tmp_path / "out"
    crashing = _CountingGenerate(model, fail_on=3)
    monkeypatch.setattr(model, "generate", crashing)
    with pytest.raises(KeyboardInterrupt):
        runner.evaluate(
            model, tok, SYN, tsv, out, batch_size=2, max_new_tokens=MAX_NEW, progress=False, echo=False
        )
    # the two finished batches were flushed; simulate a line cut short by the crash
    with (out / "predictions.jsonl").open("a") as fh:
        fh.write('{"index": 6, "predic')
    assert len(_preds_lenient(out / "predictions.jsonl")) == 4
    monkeypatch.undo()
    counter = _CountingGenerate(model)
    monkeypatch.setattr(model, "generate", counter)
    s = runner.evaluate(
        model, tok, SYN, tsv, out, batch_size=2, max_new_tokens=MAX_NEW, progress=False, echo=False
    )
    assert (
        counter.prompts == len(GOOD) - 4 and s["result"]["n"] == len(GOOD) and s["result"]["n_missing"] == 0
    )
    assert list(_preds(out / "predictions.jsonl")) == [r[0] for r in GOOD]


def _preds_lenient(path: Path) -> dict:
    return runner.load_predictions(path, strict=False)


def test_changed_settings_refuse_stale_cache(tmp_path, capsys):
    tsv = _write_tsv(tmp_path / "d.tsv", with_bad=False)
    out = tmp_path / "out"
    base = [
        "eval",
        "--model",
        str(MODEL),
        "--benchmark",
        SYN,
        "--data",
        str(tsv),
        "--out",
        str(out),
        "--limit",
        "2",
        "--no-progress",
    ]
    assert main(base + ["--max-new-tokens", "3"]) == 0
    capsys.readouterr()
    assert main(base + ["--max-new-tokens", "5"]) == 2
    assert "max_new_tokens" in capsys.readouterr().err
    assert main(base + ["--max-new-tokens", "5", "--overwrite"]) == 0


def test_scoring_only_mode_prints_summary_json(tmp_path, capsys):
    tsv = _write_tsv(tmp_path / "d.tsv")
    pred_file = tmp_path / "p.jsonl"
    answers = {i: a for i, _, _, _, a, _ in GOOD}
    lines = [
        {"index": 0, "prediction": "Red."},
        {"index": "1", "prediction": "green"},
        {"index": 3, "prediction": "1"},
        {"index": 42, "prediction": "?"},
    ]
    pred_file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main(["eval", "--benchmark", SYN, "--data", str(tsv), "--predictions", str(pred_file)]) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    expected = score(SYN, tsv, {0: "Red.", "1": "green", 3: "1", 42: "?"})
    assert summary["result"] == runner._jsonable(expected)
    assert summary["result"]["n_unknown_predictions"] == 1
    assert summary["result"]["categories"]["color"] == pytest.approx(100.0 / 3)  # 0 right, 1 wrong, 9 missing
    assert summary["result"]["n"] == len(answers) + 1
    assert {m["index"] for m in summary["malformed"]} == {7, 8}
    # also with a .tsv given as --benchmark plus --benchmark-name
    assert (
        main(["eval", "--benchmark", str(tsv), "--benchmark-name", SYN, "--predictions", str(pred_file)]) == 0
    )
    assert json.loads(capsys.readouterr().out)["result"] == summary["result"]
    # bad input -> exit code 2
    assert (
        main(["eval", "--benchmark", "NoSuchBench", "--data", str(tsv), "--predictions", str(pred_file)]) == 2
    )
    assert main(["eval", "--benchmark", SYN, "--data", str(tsv)]) == 2  # neither --model nor --predictions
    assert "unknown benchmark" in capsys.readouterr().err


def test_mcq_benchmark_prompts_hits_and_subset(tiny, tmp_path):
    model, tok = tiny
    tsv = tmp_path / "MMStar.tsv"
    with tsv.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["index", "image", "question", "A", "B", "C", "D", "answer", "category"])
        w.writerow([0, _png_b64("red"), "Colour?", "red", "blue", "green", "pink", "A", "coarse"])
        w.writerow([1, _png_b64("blue"), "Colour?", "red", "blue", "green", "pink", "B", "coarse"])
        w.writerow([2, _png_b64("green"), "Colour?", "red", "blue", "", "", "E", "fine"])  # unknown option
        w.writerow([3, "1", "Same image?", "yes", "no", "", "", "A", "fine"])  # image shared with row 1
    name, path = runner.resolve_benchmark(str(tsv))
    assert name == "MMStar" and path == tsv
    s = runner.evaluate(
        model,
        tok,
        name,
        path,
        tmp_path / "o",
        limit=2,
        batch_size=2,
        max_new_tokens=MAX_NEW,
        progress=False,
        echo=False,
    )
    assert [m["index"] for m in s["malformed"]] == [2] and "not one of the options" in s["malformed"][0][
        "reason"
    ]
    assert s["result"]["n"] == 2 and s["scored_tsv"].endswith("subset_first2.tsv")
    preds = _preds(tmp_path / "o" / "predictions.jsonl")
    assert all(isinstance(r["hit"], bool) and r["answer"] in "AB" for r in preds.values())
    assert s["result"]["score"] == pytest.approx(50.0 * sum(r["hit"] for r in preds.values()))


def test_subset_tsv_keeps_shared_image_groups(tmp_path):
    src = tmp_path / "MME.tsv"
    img = _png_b64("red")
    with src.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["index", "image", "question", "answer", "category"])
        w.writerow([1, img, "q1", "Yes", "color"])
        w.writerow([2, "1", "q2", "No", "color"])
        w.writerow([3, "1", "q3", "No", "color"])
        w.writerow([4, _png_b64("blue"), "q4", "Yes", "color"])
    dst = runner._write_subset_tsv(src, tmp_path / "sub.tsv", [2, 3])
    rows = read_tsv(dst).rows
    assert [r["index"] for r in rows] == [2, 3]
    assert rows[0]["image"] == img and "image_ref" not in rows[0]
    assert rows[1]["image"] == img and rows[1]["image_ref"] == 2


def test_benchmark_resolution(tmp_path, monkeypatch):
    for var in ("NAVIL_DATA", "LMUData"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runner.guess_benchmark("MMBench_DEV_EN_V11.tsv") == "MMBench_DEV_EN_V11"
    assert runner.guess_benchmark("mmbench_dev_en_small.tsv") == "MMBench_DEV_EN"
    with pytest.raises(navil.NavilError, match="benchmark-name"):
        runner.guess_benchmark("whatever.tsv")
    with pytest.raises(navil.NavilError, match="LMUData"):
        runner.resolve_benchmark("MMStar")
    data = tmp_path / "data"
    data.mkdir()
    (data / "MMStar.tsv").write_text("index\tquestion\n")
    monkeypatch.setenv("NAVIL_DATA", str(data))
    assert runner.resolve_benchmark("mmstar") == ("MMStar", data / "MMStar.tsv")
    # NaViL_Synthetic without data: the seeded default split is generated into the output folder
    name, path = runner.resolve_benchmark(SYN, out_dir=tmp_path / "o", synthetic_n=6, synthetic_seed=1)
    assert name == SYN and path.parent == tmp_path / "o"
    rows = read_tsv(path).rows
    assert [r["category"] for r in rows] == list(syn.CATEGORIES)
    again = runner.resolve_benchmark(SYN, out_dir=tmp_path / "o2", synthetic_n=6, synthetic_seed=1)[1]
    assert again.read_bytes() == path.read_bytes()


def test_cli_synthetic_without_data_generates_split(tmp_path, monkeypatch, capsys):
    for var in ("NAVIL_DATA", "LMUData"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--model",
                str(MODEL),
                "--benchmark",
                SYN,
                "--synthetic-n",
                "6",
                "--out",
                str(out),
                "--max-new-tokens",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["result"]["n"] == 6 and set(summary["result"]["chance"]) == set(syn.CATEGORIES)
    assert Path(summary["data"]).parent == out
    assert "| category | score | chance | n |" in capsys.readouterr().out


def test_openai_judge_posts_chat_completion():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body, self.headers.get("Authorization")))
            reply = json.dumps({"choices": [{"message": {"content": " 0.7 "}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = runner.openai_judge(f"http://127.0.0.1:{server.server_port}", "judge-m", api_key="k")
        assert judge("grade this") == "0.7"
        path, body, auth = seen[0]
        assert path == "/v1/chat/completions" and auth == "Bearer k"
        assert body["model"] == "judge-m" and body["messages"][0]["content"] == "grade this"
    finally:
        server.shutdown()
        server.server_close()
    dead = runner.openai_judge("http://127.0.0.1:9/v1", "m", retries=1, timeout=2)
    assert dead("x") == "Failed to obtain answer via API."
