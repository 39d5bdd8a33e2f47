"""Does the answer look at the image? Attention from the answer position onto the visual tokens, per category.

For held-out synthetic questions of each category, runs a trained model (e.g. the quickstart's OUT/model) with
explicit attention probabilities and reports, per decoder layer and head, the share of the attention of the
position that predicts the answer which lands on visual tokens (`<IMG_CONTEXT>`, `<IMG_LINE_BREAK>`, ...), the
largest weight on a single `<IMG_CONTEXT>` token (1/n_visual when spread evenly), and the accuracy of the
first answer token.

    python benchmarks/attention_to_image.py runs/quickstart/model --categories color shape --n 30

Measured on the stop-8 quickstart model (10 min, 1 object per scene, ~21 visual tokens): colour questions
(accuracy 0.83) put 93-97% of layer 1's attention on the image with up to 0.2 on one token; shape questions
(accuracy 0.10) 3-63% spread thinly (max single token <= 0.07), i.e. the model has not learned to read shape
from the image at all.
"""
from __future__ import annotations

import argparse
import math

import torch

from navil.checkpoint.io import load_model
from navil.data.synthetic import CATEGORIES, format_question, make_sample
from navil.inference import prompt_inputs
from navil.model.decoder import ModalityRouter
from navil.model.navil import flatten_batch
from navil.processing.tokenizer import load_tokenizer


def attention_probabilities(model, ids: torch.Tensor, pixel_values: torch.Tensor, grid: torch.Tensor
                            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits [T, V] of one sequence and its causal attention probabilities per layer, each [heads, T, T]."""
    layout = flatten_batch(ids)
    x = model.embed(layout.ids, model.extract_features(pixel_values, grid))
    router = ModalityRouter.build(model.visual_mask(layout.ids))
    probs: list[torch.Tensor] = []

    def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t, heads, dim = q.shape
        k, v = (z.repeat_interleave(heads // z.shape[1], 1) for z in (k, v))
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(dim)
        p = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        probs.append(p)
        return torch.einsum("hts,shd->thd", p, v)

    hidden = model.language_model(x, layout.positions, router, attend)
    return model.language_model.lm_head(hidden), probs


@torch.no_grad()
def measure(model, tokenizer, category: str, n: int, max_objects: int, object_scale: float) -> dict:
    layers, heads = model.config.llm.num_hidden_layers, model.config.llm.num_attention_heads
    mass, peak = torch.zeros(layers, heads), torch.zeros(layers, heads)
    hits = 0
    for i in range(n):
        s = make_sample("val", i, category, max_objects=max_objects, object_scale=object_scale)
        ids, pixel_values, grid = prompt_inputs(model, tokenizer, [s.image], format_question(s.question),
                                                multi_scale=False)
        logits, probs = attention_probabilities(model, ids, pixel_values, grid)
        hits += tokenizer.decode([int(logits[-1].argmax())]).strip() == s.answer
        visual = model.visual_mask(ids[0])
        context = ids[0] == model.img_context_token_id
        for layer, p in enumerate(probs):
            last = p[:, -1]  # the answer-predicting position, [heads, T]
            mass[layer] += last[:, visual].sum(-1) / n
            peak[layer] += last[:, context].max(-1).values / n
    return {"accuracy": hits / n, "visual_tokens": int(context.sum()), "mass": mass, "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a navil model folder (e.g. the quickstart's OUT/model)")
    ap.add_argument("--categories", nargs="+", default=["color", "shape"], choices=CATEGORIES)
    ap.add_argument("--n", type=int, default=30, help="questions per category")
    ap.add_argument("--max-objects", type=int, default=1)
    ap.add_argument("--object-scale", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    for category in args.categories:
        r = measure(model, tokenizer, category, args.n, args.max_objects, args.object_scale)
        print(f"\n{category}: accuracy {r['accuracy']:.2f} over {args.n} questions, "
              f"{r['visual_tokens']} <IMG_CONTEXT> tokens in the last image")
        print("  layer  attention share on visual tokens per head      largest weight on one token per head")
        for layer, (m, p) in enumerate(zip(r["mass"].tolist(), r["peak"].tolist())):
            print(f"  {layer:5d}  {'  '.join(f'{x:.3f}' for x in m):44s}  {'  '.join(f'{x:.3f}' for x in p)}")


if __name__ == "__main__":
    main()
