"""Generation with a KV cache: prefill every prompt once (packed), then one token per sequence per step.

Prompts may be a `[B, L]` batch (left- or right-padded with `attention_mask`) or a `[1, T]` pack with
`cu_seqlens`; each prompt is generated exactly as if it were alone. As in the official model (spec Q3),
decode steps embed new tokens with the plain token table and route them through the text experts.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from navil.errors import NavilError
from navil.model.attention import masked_attention, varlen_attention
from navil.model.decoder import ModalityRouter
from navil.model.navil import NaViL, flatten_batch

DEFAULT = object()  # "use the checkpoint's end-of-turn token"


@dataclass
class KVCache:
    """Per-layer keys/values [B, capacity, kv_heads, head_dim] and each sequence's filled length."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: torch.Tensor  # [B]

    @classmethod
    def allocate(cls, model: NaViL, batch: int, capacity: int, like: torch.Tensor) -> KVCache:
        cfg = model.config.llm
        shape = (batch, capacity, cfg.num_key_value_heads, cfg.resolved_head_dim)
        n = cfg.num_hidden_layers
        return cls([like.new_zeros(shape) for _ in range(n)], [like.new_zeros(shape) for _ in range(n)],
                   torch.zeros(batch, dtype=torch.long, device=like.device))


def sample_next(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None,
                top_p: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row of logits [B, V]: argmax, or sampling with temperature / top-k / top-p."""
    if not do_sample or temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _eos_set(model: NaViL, eos_token_id) -> set[int]:
    if eos_token_id is DEFAULT:
        eos_token_id = model.end_of_turn_token_id
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id}


@torch.no_grad()
def generate(model: NaViL, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
             image_grid_thw: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
             cu_seqlens: torch.Tensor | None = None, max_new_tokens: int = 32, do_sample: bool = False,
             temperature: float = 1.0, top_p: float | None = None, top_k: int | None = None,
             eos_token_id=DEFAULT, pad_token_id: int | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None,
             streamer: Callable[[torch.Tensor], None] | None = None, **_: object) -> torch.Tensor:
    """New token ids [B, n] (n <= max_new_tokens); finished rows are padded with `pad_token_id` (or eos)."""
    layout = flatten_batch(input_ids, attention_mask, cu_seqlens)
    batch, longest = len(layout.seqlens), max(layout.seqlens)
    if min(layout.seqlens) == 0:
        raise NavilError("every prompt needs at least one token")
    limit = model.config.llm.max_position_embeddings
    if longest >= limit:
        raise NavilError(f"the prompt has {longest} tokens but the model's context is {limit} tokens")
    max_new_tokens = min(max_new_tokens, limit - longest)
    eos = _eos_set(model, eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
    if use_cache:
        cache, logits = _prefill(model, layout, pixel_values, image_grid_thw, longest + max_new_tokens)
    seqs = [layout.ids[int(s):int(e)] for s, e in zip(layout.cu_seqlens[:-1], layout.cu_seqlens[1:])]
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    out: list[torch.Tensor] = []
    for i in range(max_new_tokens):
        if not use_cache:
            logits = _full_forward_last_logits(model, seqs, pixel_values, image_grid_thw)
        token = sample_next(logits, do_sample, temperature, top_k, top_p, generator)
        token = torch.where(done, torch.full_like(token, pad), token)
        out.append(token)
        if streamer is not None:
            streamer(token)
        if eos:
            done |= torch.isin(token, torch.tensor(sorted(eos), device=token.device))
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        if use_cache:
            logits = _decode_step(model, cache, token)
        else:
            seqs = [torch.cat((s, t.view(1))) for s, t in zip(seqs, token)]
    return torch.stack(out, dim=1) if out else input_ids.new_zeros(batch, 0)


def _full_forward_last_logits(model: NaViL, seqs: list[torch.Tensor], pixel_values, image_grid_thw):
    """No-cache reference path: the whole sequence again each step (for tests and parity checks)."""
    lens = torch.tensor([len(s) for s in seqs])
    cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0))
    ids = torch.cat(seqs).unsqueeze(0)
    logits = model(input_ids=ids, cu_seqlens=cu, pixel_values=pixel_values, image_grid_thw=image_grid_thw).logits
    return logits[0, cu[1:] - 1]


def _prefill(model: NaViL, layout, pixel_values, image_grid_thw, capacity: int):
    """Run all prompts as one pack, fill the cache, return logits of each prompt's last token."""
    lm = model.language_model
    batch = len(layout.seqlens)
    cache = KVCache.allocate(model, batch, capacity, lm.embed.weight)
    features = None
    if pixel_values is not None:
        if image_grid_thw is None:
            raise NavilError("pixel_values were given without image_grid_thw")
        w = model.mlp1[1].weight
        features = model.extract_features(pixel_values.to(w.device, w.dtype), image_grid_thw.to(torch.int64))
    x = model.embed(layout.ids, features)
    router = ModalityRouter.build(model.visual_mask(layout.ids))
    rows, cols = layout.doc_ids, layout.positions

    def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cache.keys[i][rows, cols] = k
        cache.values[i][rows, cols] = v
        return varlen_attention(q, k, v, layout.cu_seqlens, causal=True, seqlens=layout.seqlens)

    hidden = lm(x, layout.positions, router, attend, seq_len=max(layout.seqlens))
    cache.lengths = torch.tensor(layout.seqlens, device=hidden.device)
    return cache, lm.lm_head(hidden[layout.cu_seqlens[1:] - 1]).float()


def _decode_step(model: NaViL, cache: KVCache, token: torch.Tensor) -> torch.Tensor:
    """One new token per sequence: plain embedding, text experts only (official decode behaviour)."""
    lm = model.language_model
    batch = token.shape[0]
    pos = cache.lengths
    span = int(pos.max()) + 1
    arange = torch.arange(batch, device=token.device)
    mask = (torch.arange(span, device=token.device) <= pos.unsqueeze(1)).view(batch, 1, 1, span)

    def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cache.keys[i][arange, pos] = k
        cache.values[i][arange, pos] = v
        o = masked_attention(q.unsqueeze(1), cache.keys[i][:, :span], cache.values[i][:, :span], mask)
        return o.squeeze(1)

    hidden = lm(lm.embed(token), pos, ModalityRouter(), attend, seq_len=span)
    cache.lengths = pos + 1
    return lm.lm_head(hidden).float()
