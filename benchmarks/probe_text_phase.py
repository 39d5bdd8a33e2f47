"""Does the quickstart's text phase teach the lookup, and does it hold on scenes laid out as images are?

Runs `navil.quickstart.train_text_llm` (the preset's text curriculum on the object-word sets) for each
`--steps` and `--seeds`, then asks the text LLM held-out colour and shape questions about object scenes of 1-5
objects written as their grounded visual tokens: the merged token grid the image processor gives the image,
row by row with `<IMG_LINE_BREAK>`, each token the word of the object under it ("red_star"; the word grounding's
own targets, `navil.train.grounding.region_targets`) or the background word. That is the input the LLM meets
in stages 1 and 2 when grounding is perfect, so this is the decoder's half of colour and shape on its own.

    python benchmarks/probe_text_phase.py --data runs/quickstart/data --steps 812 1600 --seeds 0 1 2

Measured (stop 24, 1 thread, two runs side by side, seed-0 data; colour / shape, ~120 questions each):

    steps   seed 0        seed 1        seed 2
    812     0.65 / 0.96   1.00 / 0.99   0.76 / 0.79     (the stop-23 default)
    1600    0.98 / 0.99                 0.80 / 0.90

The lookup forms as a sudden drop of the training loss (seed 1: 0.30 at step 183, 0.001 at 531; seed 0 still at
0.11 after 812 steps, 0.002 after 1600). Text-phase variants measured the same way (812 steps, seed 0): colour
asked twice as often as shape 0.56 / 0.42 (the drop never came); the last 55% on these grid scenes with
count, position and ocr questions added 0.58 / 0.83 (count 0.24, position 0.25 = chance, ocr 0.74); grid scenes
from the start 0.42 / 0.26.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from navil.checkpoint.llm_init import init_from_llm
from navil.data.synthetic import format_question, iter_samples
from navil.processing.image import ImageProcessor
from navil.processing.tokenizer import (
    IMG_END_TOKEN,
    IMG_FRAME_BREAK_TOKEN,
    IMG_LINE_BREAK_TOKEN,
    IMG_START_TOKEN,
)
from navil.quickstart import Preset, Validator, _configs, _navil_kwargs, train_text_llm
from navil.quickstart_data import BACKGROUND_WORD, DataSizes, object_word, object_words, prepare_data
from navil.train.grounding import region_targets


def grid_text(sample, processor: ImageProcessor) -> str:
    """The image block of `sample` written as its grounded visual tokens (see the module docstring)."""
    w, h = sample.image.size
    _, gh, gw = processor.grid_of(processor.scale_sizes(h, w, multi_scale=False)[0])
    m = processor.merge_size
    vocab = [*object_words(), BACKGROUND_WORD]
    labels = region_targets(torch.tensor([[1, gh, gw]]), [sample.regions()], m,
                            lambda r: object_word(r["color"], r["label"]), {v: i for i, v in enumerate(vocab)},
                            len(vocab) - 1)[0].view(gh // m, gw // m)
    rows = "".join(" ".join(vocab[i] for i in row) + IMG_LINE_BREAK_TOKEN for row in labels.tolist())
    return f"{IMG_START_TOKEN}{rows}{IMG_FRAME_BREAK_TOKEN}{IMG_END_TOKEN}"


def write_probe_set(path: Path, n: int, seed: int, p: Preset) -> Path:
    """`n` held-out colour/shape questions (1-5 objects) on grid-text scenes, one per conversation."""
    patch = p.vision["patch_size"]
    processor = ImageProcessor(patch, 2, p.min_dynamic_patch * patch**2, p.max_dynamic_patch * patch**2)
    with open(path, "w", encoding="utf-8") as f:
        for s in iter_samples("train", n, seed=seed, start=90 * 10**6, categories=("color", "shape"),
                              object_scale=p.object_scale, canvas_fill=p.canvas_fill):
            conv = [{"from": "human", "value": grid_text(s, processor) + "\n" + format_question(s.question)},
                    {"from": "gpt", "value": s.answer}]
            f.write(json.dumps({"id": f"probe-{s.index}", "conversations": conv, "category": s.category}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="runs/quickstart/data", help="quickstart data folder (made if missing)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, nargs="+", default=[812, 1600])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--questions", type=int, default=240)
    ap.add_argument("--out", default="runs/probe_text_phase")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = Preset()
    data = prepare_data(args.data, args.data_seed, DataSizes(), p.object_scale, p.canvas_fill)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probe = write_probe_set(out / "grid_probe.jsonl", args.questions, args.data_seed, p)
    for steps in args.steps:
        for seed in args.seeds:
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            llm_dir, _ = train_text_llm(data, p, seed, steps, out / f"llm_{steps}_{seed}")
            model = init_from_llm(llm_dir, _configs(p, 0)[1], seed=seed, **_navil_kwargs(p))
            rec = Validator({"": str(probe)}, model, model.tokenizer, p, out / "curve.jsonl")(model, "probe", steps)
            acc = rec["categories"]
            print(f"steps {steps:5d}  seed {seed}  colour {acc['color']:.2f}  shape {acc['shape']:.2f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
