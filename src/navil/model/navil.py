"""The NaViL model: vision encoder -> pixel-shuffle MLP connector -> decoder with modality experts.

Inputs may be one sequence `[1, L]`, a batch `[B, L]` (optionally padded, with `attention_mask`) or a
packed batch `[1, T]` with `cu_seqlens`. Internally everything is one flat token stream with document
boundaries, so attention costs the sum of the documents' squares.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from navil.config import NaViLConfig
from navil.errors import NavilError
from navil.model.attention import varlen_attention
from navil.model.decoder import Decoder, ModalityRouter
from navil.model.quirks import IMG_CONTEXT_ROW, VISUAL_EXPERT_TOKENS
from navil.model.vision import VisionEncoder

IGNORE_INDEX = -100


@dataclass
class NaViLOutput:
    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    num_loss_tokens: int = 0


@dataclass
class TokenLayout:
    """A batch flattened to one token stream: which (row, col) each token came from and its document."""

    ids: torch.Tensor          # [T]
    positions: torch.Tensor    # [T] RoPE positions, restarting per document
    cu_seqlens: torch.Tensor   # [D+1]
    seqlens: list[int]
    flat_index: torch.Tensor | None  # [T] index into input_ids.view(-1) (None when nothing was dropped)

    @property
    def doc_ids(self) -> torch.Tensor:
        lens = torch.tensor(self.seqlens, device=self.ids.device)
        return torch.repeat_interleave(torch.arange(len(self.seqlens), device=self.ids.device), lens)


def flatten_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  cu_seqlens: torch.Tensor | None = None) -> TokenLayout:
    """Turn `[B, L]` ids (+ padding mask) or a `[1, T]` pack (+ cu_seqlens) into a `TokenLayout`."""
    if input_ids.dim() != 2:
        raise NavilError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    dev = input_ids.device
    if cu_seqlens is not None:
        if input_ids.shape[0] != 1:
            raise NavilError("cu_seqlens needs input_ids of shape [1, total_tokens]")
        cu = cu_seqlens.to(dev, torch.int64)
        if int(cu[0]) != 0 or int(cu[-1]) != input_ids.shape[1] or bool((cu[1:] < cu[:-1]).any()):
            raise NavilError(f"cu_seqlens must rise from 0 to {input_ids.shape[1]}, got {cu.tolist()}")
        seqlens = (cu[1:] - cu[:-1]).tolist()
        ids, flat_index = input_ids[0], None
    elif attention_mask is None or bool(attention_mask.all()):
        b, length = input_ids.shape
        seqlens = [length] * b
        ids, flat_index = input_ids.reshape(-1), None
    else:
        keep = attention_mask.reshape(-1).bool()
        flat_index = torch.nonzero(keep).squeeze(1)
        ids = input_ids.reshape(-1)[flat_index]
        seqlens = attention_mask.sum(1).tolist()
    lens = torch.tensor(seqlens, device=dev, dtype=torch.int64)
    cu = F.pad(lens.cumsum(0), (1, 0))
    positions = torch.arange(ids.shape[0], device=dev) - torch.repeat_interleave(cu[:-1], lens)
    return TokenLayout(ids, positions, cu, seqlens, flat_index)


class NaViL(nn.Module):
    """A native MLLM. Module names mirror the official checkpoint where the layouts agree."""

    def __init__(self, config: NaViLConfig):
        super().__init__()
        config.validate()
        self.config = config
        v, m = config.vision, config.llm
        self.vision_model = VisionEncoder(v, config.merge_size)
        width = v.hidden_size * config.merge_size ** 2
        self.mlp1 = nn.Sequential(nn.LayerNorm(width, eps=1e-5), nn.Linear(width, m.hidden_size), nn.GELU(),
                                  nn.Linear(m.hidden_size, m.hidden_size))
        self.special_token_embedding = nn.Embedding(12, m.hidden_size)
        self.language_model = Decoder(m)
        self.name_or_path: str | None = None
        # `<|im_end|>` of the checkpoint's tokenizer: where generation stops by default.
        self.end_of_turn_token_id: int | None = None
        # A tokenizer the model owns (set by LLM initialisation); save_pretrained writes it when present.
        self.tokenizer = None

    # ---- special tokens ---------------------------------------------------------------------------------
    def _special_ids(self) -> list[int]:
        ids = self.config.special_token_ids
        if ids is None:
            raise NavilError("the model's special_token_ids are not set; load it with navil.load_model or set "
                             "config.special_token_ids from the tokenizer")
        return ids

    @property
    def img_context_token_id(self) -> int:
        return self._special_ids()[IMG_CONTEXT_ROW]

    # ---- pieces of the forward ----------------------------------------------------------------------------
    def extract_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """Vision features per merge unit, [U, H_llm], in the order they fill `<IMG_CONTEXT>` slots."""
        x = self.vision_model(pixel_values, image_grid_thw)
        unit = self.config.merge_size ** 2
        x = x.reshape(-1, unit * x.shape[-1])  # pixel shuffle: concat the 2x2 patches of each merge unit
        if self.config.restore_raster_order:
            plan = self.vision_model.plan(image_grid_thw)
            x = x[torch.argsort(plan.window_index.to(x.device))]
        x = self.mlp1(x)
        if self.config.visual_token_rms is not None:
            x = F.rms_norm(x, (x.shape[-1],), eps=1e-6) * self.config.visual_token_rms
        return x

    def embed(self, ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with special-token rows from `special_token_embedding` and image features
        written into the `<IMG_CONTEXT>` positions, in order."""
        special = torch.tensor(self._special_ids(), device=ids.device)
        emb = self.language_model.embed(ids)
        match = ids.unsqueeze(-1) == special  # [T, 12]
        is_special = match.any(-1)
        if bool(is_special.any()):
            rows = match.float().argmax(-1)
            emb = torch.where(is_special.unsqueeze(-1), self.special_token_embedding(rows).to(emb.dtype), emb)
        ctx = ids == special[IMG_CONTEXT_ROW]
        n_slots = int(ctx.sum())
        n_feats = 0 if features is None else features.shape[0]
        if n_slots != n_feats:
            raise NavilError(f"the prompt has {n_slots} <IMG_CONTEXT> tokens but the images give {n_feats} "
                             f"visual features; rebuild the prompt from image_grid_thw")
        if n_slots:
            emb = emb.index_put((torch.nonzero(ctx).squeeze(1),), features.to(emb.dtype))
        return emb

    def visual_mask(self, ids: torch.Tensor) -> torch.Tensor:
        special = self._special_ids()
        rows = torch.tensor([special[r] for r in VISUAL_EXPERT_TOKENS], device=ids.device)
        return torch.isin(ids, rows)

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                image_grid_thw: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                return_logits: bool = True, **_: object) -> NaViLOutput:
        """Logits `[B, L, V]` (fp32) and, with `labels`, the official next-token loss."""
        layout = flatten_batch(input_ids, attention_mask, cu_seqlens)
        hidden = self.hidden_states(layout, pixel_values, image_grid_thw)
        loss, n_loss = None, 0
        if labels is not None:
            flat_labels = labels.reshape(-1) if layout.flat_index is None else labels.reshape(-1)[layout.flat_index]
            src, targets = next_token_targets(layout, flat_labels, self.img_context_token_id)
            n_loss = targets.numel()
            if n_loss:
                loss = F.cross_entropy(self.language_model.lm_head(hidden[src]).float(), targets)
            else:
                loss = hidden.sum() * 0.0
        logits = None
        if return_logits:
            flat = self.language_model.lm_head(hidden).float()
            if layout.flat_index is None:
                logits = flat.view(*input_ids.shape, -1)
            else:
                logits = flat.new_zeros(input_ids.numel(), flat.shape[-1])
                logits[layout.flat_index] = flat
                logits = logits.view(*input_ids.shape, -1)
        return NaViLOutput(logits, loss, n_loss)

    def hidden_states(self, layout: TokenLayout, pixel_values: torch.Tensor | None,
                      image_grid_thw: torch.Tensor | None) -> torch.Tensor:
        """Final-normed decoder states [T, H] for a flattened batch."""
        features = None
        if pixel_values is not None:
            if image_grid_thw is None:
                raise NavilError("pixel_values were given without image_grid_thw")
            param = self.mlp1[1].weight
            features = self.extract_features(pixel_values.to(param.device, param.dtype),
                                             image_grid_thw.to(torch.int64))
        x = self.embed(layout.ids, features)
        router = ModalityRouter.build(self.visual_mask(layout.ids))

        def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return varlen_attention(q, k, v, layout.cu_seqlens, causal=True, seqlens=layout.seqlens)

        return self.language_model(x, layout.positions, router, attend, seq_len=max(layout.seqlens))

    # ---- inference -----------------------------------------------------------------------------------------
    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """Only the new token ids [B, n]; see `navil.model.generate.generate` for the arguments."""
        from navil.model.generate import generate

        return generate(self, input_ids, **kwargs)

    def chat(self, tokenizer, images=None, question: str = "", history=None, **kwargs):
        """Answer a question about images, as the official `chat`; see `navil.inference.chat`."""
        from navil.inference import chat

        return chat(self, tokenizer, images=images, question=question, history=history, **kwargs)

    # ---- persistence ---------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, max_shard_bytes: int = 5 * 2**30) -> None:
        """Write config.json + safetensors in the official layout (and copy the tokenizer files)."""
        from navil.checkpoint.io import save_pretrained

        save_pretrained(self, out_dir, max_shard_bytes=max_shard_bytes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def next_token_targets(layout: TokenLayout, labels: torch.Tensor, img_context_id: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions whose logits are scored, their target ids) under the official loss rule.

    Position t predicts the label at t + 1 of the same document; positions whose *input* token is
    `<IMG_CONTEXT>` never count, whatever their label, and labels equal to -100 are skipped.
    """
    docs = layout.doc_ids
    nxt = labels[1:]
    valid = (docs[:-1] == docs[1:]) & (nxt != IGNORE_INDEX) & (layout.ids[:-1] != img_context_id)
    src = torch.nonzero(valid).squeeze(1)
    return src, nxt[src]
