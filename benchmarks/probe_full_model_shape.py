"""Does the whole model learn colour and shape from the image? A stage-2 learning probe on single objects.

Builds the quickstart's model (`Preset`) from a text LLM trained for `--llm-steps` on the synthetic text,
trains it (stage 2, everything trainable, the quickstart's optimiser settings) on single-object colour/shape
question answering drawn with `--canvas-fill`, and prints the validation accuracy per category every 100
steps. With `--feature-probe` it then fits linear classifiers of the object's shape on the mean- and
max-pooled features of the ViT and of the connector (held-out accuracy): how much shape the visual features
carry, whatever the decoder makes of it.

    python benchmarks/probe_full_model_shape.py --canvas-fill 0.3 --steps 600 --feature-probe
    python benchmarks/probe_full_model_shape.py --steps 600          # canvases drawn independently
    python benchmarks/probe_full_model_shape.py --canvas-fill 0.5 --confusion   # which shapes are confused

Measured (1 thread, 600 steps of ~21 images, object_scale 2, 200 validation images, chance 0.20), validation
shape accuracy at steps 100 / 300 / 500 / 600; colour reaches 1.00 by step 400 in every run with fitted canvases:

    canvas                                         shape
    independent of the object (~13% of the image)  0.20 / 0.18 / 0.18 / 0.18   (colour 0.80 at 600)
    --canvas-fill 0.3 (object ~27%)                0.21 / 0.18 / 0.32 / 0.41
    --canvas-fill 0.5 (object ~43%, the quickstart)  0.20 / 0.27 / 0.36 / 0.44
    canvases capped at 10240 px^2 (object ~33%)    0.22 / 0.31 / 0.46 / 0.46

The feature probe of the last run at step 600 (held-out accuracy of a linear classifier fitted on 1500
images, chance 0.20): ViT mean 0.37, ViT max 0.23, connector mean 0.47, connector max 0.40 -- no better than
the same probe after only 40 steps (canvas-fill 0.5: 0.22 / 0.37 / 0.43 / 0.33), i.e. the near-random
features. Training has not made the visual features more shape-informative: the bottleneck is the vision
encoder learning shape features, not the decoder's readout of them. Variants of the capped-canvas run that did not beat it (the preset changed
by hand): ViT LR x1 instead of x3 (0.25 at 500), connector LR x3 (0.33 at 500), LR 2e-3 (0.20 at 300), 768-
or 384-token packs (0.19-0.24 at 600-1100 steps), dark outlines around the shapes (colour slower, shape 0.21
at 300), 8-px patches (0.25 at 300). Differences below ~0.1 are within run-to-run noise here.
Stop 11, `--canvas-fill 0.5`: 1500 training images seen ~8 times (`--train-images 1500`) score like 12000
fresh ones (shape 0.27 / 0.35 / 0.53 / 0.48 vs 0.18 / 0.27 / 0.36 / 0.44 at steps 200 / 300 / 500 / 600), so
repeating the quickstart's data is not what holds shape back.
Stop 12, `--canvas-fill 0.5`, shape at steps 100 / 300 / 500 / 600: the same run after the count-"1" second
turn was dropped from single-object samples (DATA_VERSION 9; ~10% more images per step) 0.28 / 0.37 / 0.55 /
0.61, against 0.20 / 0.20 / 0.43 / 0.49 with it. Variants on the older data that did not beat that baseline:
full attention in every ViT block (0.26 / 0.25 / 0.43 at 500), LayerScale init 1.0 (colour stuck at ~0.38,
shape 0.19 at 500), patch-embedding LR x10 (0.20 / 0.26 / 0.45 / 0.50), ViT LR x6 (0.20 / 0.35 / 0.44 at 500),
and a per-patch conv stem (3x3 stride-2 convs 3-32-64-128 inside each patch, then a linear layer; 0.89 in the
ViT-only probe) in place of the patch embedding: 0.20 / 0.20 / 0.37 / 0.36 with colour slowed to 0.82, and
with a LayerNorm after it colour stays at chance until step 400. With a variance-preserving init (Kaiming convs,
the projection scaled to the linear embedding's output std at init, or 3x that) on the new data it learns colour
normally but shape no faster than the linear embedding: 0.20 / 0.24 / 0.42 / 0.53 and 0.20 / 0.34 / 0.55 / 0.55.
Longer (1200 steps, 2 threads): shape 0.58 at 600, then a plateau at 0.51-0.60 to step 1200. `--confusion` at
step 600 (shape 0.55) shows what the plateau is: circles are called "square" (16 of 20), triangles are split
between triangle, cross and star; crosses, squares and stars are mostly right (15 of ~20 each). The features
tell "fills its box" from "thin or pointy" but not the boundary's curvature or corner count. With twice the
patches per image (`min/max_dynamic_patch` 144/256) shape is the same at step 600 (0.59) but the confusions move
(circles 15 of 20 right, squares and crosses now mixed up): no fixed resolution limit, the ViT is simply slow.
Stop 13 (1 thread, two runs at a time), shape at steps 100 / 200 / 300 / 400 / 500 / 600: this run as is,
0.21 / 0.23 / 0.29 / 0.54 / 0.50 / 0.63 in 10.8 min. With 4x4 merge units (`downsample_ratio` 0.25, a quarter
of the visual tokens, 64-px tokens; the config check relaxed by hand) it was 0.53 at step 600, and the run took
14.6 min, because more images fit in a pack. Fewer, larger tokens do not help.
benchmarks/probe_vit_readout.py shows that the ViT is not slow under a max-pooled readout (0.97 at step 300).
Two scratch variants of this run test that readout inside the whole model:
- Bag-of-answer-words auxiliary loss (not committed): a linear head on the max-pooled ViT features of each
  image predicts the answer words of its sample, trained alongside the decoder's loss (BCE over the vocabulary,
  weight 1 or 3). The head's loss stayed near its shape-blind floor, and shape tracked the run as is (0.62 at
  600). The same held with the ViT LR at x1, with a softmax over the vocabulary, with a default-initialised
  instead of a zero-initialised head, and with the decoder's loss switched off (300 steps each).
- The same max-pooled features with a 5-way shape head fed the same packs: 0.44 / 0.81 / 0.95 at steps 100 /
  200 / 300 (plain AdamW, lr 1e-3). Betas (0.9, 0.95), warm-up, cosine schedule and clipping: 0.81 at 300. LR
  3e-3: 0.77.
Stop 13 concluded that the answer-word targets (one word per image, colour or shape, no cue which) were the
difference. Stop 14 tested that with caption targets, which name every object's colour and shape: a scratch
auxiliary head (not committed) on each image's max-pooled ViT features (or connector outputs), trained in stage
1 on the single-object captions (s1_easy, ~30 images a step, 1 thread, the quickstart's stage-1 optimiser).
Held-out single-object shape read off the head at steps 100 / 200 / 300 (colour was 1.00 by step 100-150 in
every row):

    head over the vocabulary                                  100    200    300
    BCE per word, connector outputs                           0.21   0.21   0.23
    BCE per word, ViT features                                0.19   0.34   0.41
    BCE per word, ViT features, decoder loss off              0.23   0.35   0.40
    BCE per word, ViT features, LR 1e-3 (connector x1)        0.20   0.18   0.25
    softmax over the caption's words, ViT features            0.23   0.41   0.55
    softmax over the 5 shape words only, decoder loss off     0.61   0.88   0.94  (0.82 at 150)
    the same at LR 1e-3                                       0.50   0.70   0.76
    one softmax over the shape words, one over the colours    0.33   0.54   0.62

So complete targets are not enough. The same max-pooled ViT learns shape in ~150 steps only when the head's loss
is a softmax over the shape words alone. A second softmax over the colours (learned by step 50) halves that speed,
and a bag-of-words head that also predicts function words learns shape ~3x slower. In the whole quickstart (1
thread, two runs at a time, test split), none of these heads helped. Overall accuracy was 0.242 with BCE in stage
1; 0.213 with BCE also on stage 2's captions; 0.247 with the caption softmax in stage 1; 0.228 with that and stage
1 at 30% of the budget. With one softmax per answer set (colours, shapes, ocr words) over the caption's words, it
was 0.280 in stage 1 and 0.250 also in stage 2. Shape stayed at 0.18-0.26 in every run, against 0.272 overall and
shape 0.19 for the default run (2 threads). Stage 1 has only 144 steps, split over three curriculum sets, and the
decoder's soft readout still has to learn to read whatever the encoder learned.

That readout is the wall. Setup: the ViT is first warmed up for 300 steps with the shape-only head (the 0.94
row above), then trained on single-object colour/shape QA (s2_easy, stage 2, the quickstart's LRs). Shape at QA
steps 50 / 100 / 150 / 200 / 250 / 300 (the last two runs stop at 250):

    no warm-up (control)             0.20 / 0.23 / 0.21 / 0.31 / 0.34 / 0.38
    warm-up                          0.20 / 0.24 / 0.19 / 0.20 / 0.31 / 0.34
    warm-up, then the ViT frozen     0.24 / 0.25 / 0.22 / 0.28 / 0.35 / 0.43
    the same at LR 3e-3              0.18 / 0.18 / 0.21 / 0.29 / 0.20  (colour 0.52 at 250)
    the same on shape questions only 0.35 / 0.43 / 0.53 / 0.48 / 0.51

Colour reached 0.99-1.00 by step 200-250 in the first three runs. After the warm-up, the feature probe
(`--feature-probe`'s linear classifier, 1000 train / 300 val images) gives shape from ViT mean/max 0.70 / 0.96,
and from the untrained connector's mean/max 0.76 / 0.83. Without the warm-up, the same probe gives 0.22 / 0.51
and 0.45 / 0.40. So even with a frozen encoder whose mean-pooled visual tokens carry shape linearly at 0.76,
shape QA stays near chance for 200 steps. Asked about shape alone, it plateaus at ~0.5. What needs to get
faster is the way the decoder reads the visual tokens, not the encoder. One hint at why: of the variance of the
mean-pooled connector outputs (600 val images), shape's class means explain 0.065 after the warm-up (0.008
before), colour's 0.343 (0.311). The shape directions are small beside the colour ones.
"""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from navil.checkpoint.llm_init import init_from_llm
from navil.data.synthetic import CURRICULUM, SHAPES, export_jsonl, make_sample
from navil.inference import processor_for
from navil.quickstart import Preset, Validator, _configs, _loader, _navil_kwargs, train_phase, train_text_llm
from navil.quickstart_data import DataSizes, prepare_data

TRAIN_START = 4 * 10**6  # sample indices of the probe's training images (disjoint from the quickstart's sets)


@torch.no_grad()
def pooled_features(model, n: int, split: str, canvas_fill: float | None, scale: float
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Mean/max-pooled ViT and connector features of `n` single-object shape images, with their labels."""
    proc = processor_for(model.config)
    feats: dict[str, list[torch.Tensor]] = {"vit mean": [], "vit max": [], "connector mean": [], "connector max": []}
    labels = []
    for i in range(n):
        s = make_sample(split, (TRAIN_START if split == "train" else 0) + i, "shape", max_objects=1,
                        object_scale=scale, canvas_fill=canvas_fill)
        x = proc([s.image], multi_scale=False)
        vit = model.vision_model(x.pixel_values, x.image_grid_thw)
        conn = model.extract_features(x.pixel_values, x.image_grid_thw)
        for name, f in (("vit", vit), ("connector", conn)):
            feats[f"{name} mean"].append(f.mean(0))
            feats[f"{name} max"].append(f.amax(0))
        labels.append(SHAPES.index(s.answer))
    return {k: torch.stack(v) for k, v in feats.items()}, torch.tensor(labels)


def shape_confusion(validator: Validator, model) -> str:
    """Confusion matrix (true shape -> predicted first answer token) over the validator's shape questions."""
    decode = model.tokenizer.decode
    counts = Counter((decode([truth]).strip(), decode([pred]).strip())
                     for category, truth, pred in validator.first_answers(model) if category == "shape")
    preds = sorted({p for _, p in counts})
    rows = [f"{'truth / predicted':18s}" + "".join(f"{p:>10s}" for p in preds)]
    for t in sorted({t for t, _ in counts}):
        rows.append(f"{t:18s}" + "".join(f"{counts[(t, p)]:10d}" for p in preds))
    return "\n".join(rows)


def linear_probe(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, steps: int = 500) -> float:
    """Held-out accuracy of a standardised, lightly L2-regularised linear classifier."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    head = torch.nn.Linear(x.shape[1], len(SHAPES))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(head(x), y) + 1e-3 * head.weight.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (head(xv).argmax(-1) == yv).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--canvas-fill", type=float, default=None, help="None: canvases drawn independently")
    ap.add_argument("--llm-steps", type=int, default=350)
    ap.add_argument("--train-images", type=int, default=12000)
    ap.add_argument("--feature-probe", action="store_true")
    ap.add_argument("--confusion", action="store_true", help="print the shape confusion matrix at the end")
    ap.add_argument("--work", default=None, help="folder for data and the text LLM (default: a temp folder)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = Preset(val_points=max(1, args.steps // 100))
    work = Path(args.work or tempfile.mkdtemp(prefix="navil-probe-"))
    drawing = {"object_scale": preset.object_scale, "canvas_fill": args.canvas_fill, **CURRICULUM["easy"]}
    export_jsonl(work / "train", "train", args.train_images, questions_per_image=2, start=TRAIN_START, **drawing)
    export_jsonl(work / "val", "val", 200, balanced=True, **drawing)
    llm_dir = work / "llm"
    if not (llm_dir / "config.json").exists():
        tiny = {k: 24 for k in ("s1_easy", "s1_medium", "s1_full", "s2_easy", "s2_medium", "s2_qa")}
        data = prepare_data(work / "data", 0, DataSizes(**tiny, val=12, test=12))  # only the text is used
        train_text_llm(data, preset, 0, args.llm_steps, llm_dir)
    model = init_from_llm(llm_dir, _configs(preset, 0)[1], seed=0, **_navil_kwargs(preset))
    validator = Validator({"": str(work / "val" / "val_qa.jsonl")}, model, model.tokenizer, preset, work / "curve.jsonl")
    loader = _loader(str(work / "train" / "train_qa.jsonl"), None, model, model.tokenizer, preset, 0)
    train_phase("probe", model, "stage2", [(0.0, loader)], args.steps, preset.lr_stage2, preset, validator,
                {"vision": preset.vision_lr_mult, "connector": preset.connector_lr_mult})
    validator(model, "probe", args.steps)
    if args.confusion:
        print(shape_confusion(validator, model), flush=True)
    if args.feature_probe:
        model.eval()
        train, y = pooled_features(model, 1500, "train", args.canvas_fill, preset.object_scale)
        val, yv = pooled_features(model, 300, "val", args.canvas_fill, preset.object_scale)
        for name in train:
            print(f"linear probe of shape on {name:15s} features: held-out accuracy "
                  f"{linear_probe(train[name], y, val[name], yv):.3f}", flush=True)


if __name__ == "__main__":
    main()
