"""The vision warm-up: only the encoder and the connector learn, on the grounding loss of labelled images."""
from __future__ import annotations

import torch

from navil.checkpoint.llm_init import init_weights
from navil.config import tiny
from navil.data.synthetic import COLORS, SHAPES, make_sample
from navil.model.navil import NaViL
from navil.train.grounding import EmbeddingGrounding
from navil.train.vision_warmup import warm_up_vision


def test_warm_up_trains_only_the_vision_side_and_lowers_the_grounding_loss():
    torch.manual_seed(0)
    cfg = tiny()
    cfg.special_token_ids = list(range(288, 300))
    cfg.min_dynamic_patch, cfg.max_dynamic_patch = 16, 32
    model = init_weights(NaViL(cfg), seed=0)
    words = {f"{c}_{s}": 10 + i for i, (c, s) in enumerate((c, s) for c in COLORS for s in SHAPES)}
    grounding = EmbeddingGrounding(model.language_model.embed, words, 5,
                                   lambda r: f"{r['color']}_{r['label']}" if r["label"] in SHAPES else None)
    samples = [make_sample("train", i, categories=("color",), max_objects=1, object_scale=2.0, canvas_fill=0.5)
               for i in range(4)]
    batch = ([s.image for s in samples], [s.regions() for s in samples])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def batch_at(step: int, frac: float):
        seen.append((step, frac))
        return batch

    summary = warm_up_vision(model, grounding, batch_at, steps=30, lr=3e-3, connector_lr_mult=3.0,
                             warmup_steps=3, log=lambda _: None, log_every_s=0.0)
    assert seen[0] == (1, 0.0) and seen[-1] == (30, 29 / 30)
    losses = [h["loss"] for h in summary["loss_log"]]
    assert summary["steps"] == 30 and len(losses) == 30 and losses[-1] < 0.7 * losses[0]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("vision_model.", "mlp1.")) for k in changed)
    assert any(k.startswith("mlp1.") for k in changed)
    assert all(p.requires_grad for p in model.parameters())  # handed back fully trainable
