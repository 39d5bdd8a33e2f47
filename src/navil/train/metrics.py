"""Observability: metrics.jsonl, TensorBoard, model FLOPs / MFU, run metadata, progress bar.

MFU = model FLOPs per second / peak FLOP/s of the devices. Model FLOPs are counted analytically per pack
(`pack_train_flops`): 2 FLOPs per multiply-add of every matmul a token goes through in the forward (its own
modality expert only; the LM head only at scored positions; attention within each document / image scale /
window, causal in the LLM), times 3 for trainable weights (forward, input gradient, weight gradient) and
times 2 for frozen ones (no weight gradient), attention times 3. The peak is `peak_flops` from the config
or measured once with a short fp32 (CPU) / bf16 (CUDA) matmul benchmark.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from navil.config import NaViLConfig


# ---- FLOPs ---------------------------------------------------------------------------------------------------
def _doc_lengths(cu_seqlens: torch.Tensor) -> list[int]:
    return (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()


def pack_train_flops(config: NaViLConfig, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None,
                     image_grid_thw: torch.Tensor | None, num_loss_tokens: int,
                     trainable: set[str] | frozenset[str] | tuple[str, ...], attention: bool = True) -> float:
    """Model FLOPs of one training forward+backward over a pack (see module docstring); `attention=False`
    leaves out the attention score/value products (to compare with torch's FlopCounterMode, which does not
    count CPU SDPA kernels)."""
    from navil.model.quirks import VISUAL_EXPERT_TOKENS
    from navil.model.vision import plan_windows

    v, m = config.vision, config.llm
    trainable = set(trainable)

    def mult(cat: str) -> float:
        return 6.0 if cat in trainable else 4.0  # 2 FLOPs/MAC x (3 or 2 passes)

    ids = input_ids.reshape(-1)
    t_total = ids.numel()
    n_visual = 0
    if config.special_token_ids is not None:
        special = config.special_token_ids
        vis_ids = torch.tensor([special[r] for r in VISUAL_EXPERT_TOKENS])
        n_visual = int(torch.isin(ids, vis_ids).sum())
    n_text = t_total - n_visual
    hd, nh, nkv, h = m.resolved_head_dim, m.num_attention_heads, m.num_key_value_heads, m.hidden_size
    attn_macs = h * (nh + 2 * nkv) * hd + nh * hd * h
    ffn_macs = 3 * h * m.intermediate_size
    L = m.num_hidden_layers
    flops = 0.0
    # decoder: text tokens through text weights, visual tokens through visual experts (if any)
    flops += L * n_text * (attn_macs * mult("text_attention") + ffn_macs * mult("text_ffn"))
    vis_attn_cat = "visual_experts" if m.attention_experts else "text_attention"
    vis_ffn_cat = "visual_experts" if m.ffn_experts else "text_ffn"
    vis_attn = attn_macs * mult(vis_attn_cat)
    if m.attention_experts and m.family == "internlm2":  # B2: wo_ve(wo(x)) for visual tokens
        vis_attn += nh * hd * h * mult("text_attention")
    flops += L * n_visual * (vis_attn + ffn_macs * mult(vis_ffn_cat))
    # causal attention within documents: QK^T and AV, each seq*(seq+1)/2 * nh * hd MACs
    docs = _doc_lengths(cu_seqlens) if cu_seqlens is not None else [t_total]
    if attention:
        flops += L * 6.0 * sum(s * (s + 1) / 2 * nh * hd * 2 for s in docs)
    # LM head at scored positions
    flops += num_loss_tokens * h * m.vocab_size * mult("embeddings" if m.tie_word_embeddings else "lm_head")
    # vision encoder + connector
    if image_grid_thw is not None and image_grid_thw.numel():
        c, p = v.hidden_size, v.patch_size
        grids = tuple(tuple(int(x) for x in row) for row in image_grid_thw.tolist())
        n_patch = sum(t * gh * gw for t, gh, gw in grids)
        block_macs = 4 * c * c + 2 * c * v.intermediate_size
        # patch embedding: no input gradient (pixels), weight gradient only when the ViT trains
        flops += n_patch * v.num_channels * p * p * c * (4.0 if "vision" in trainable else 2.0)
        flops += v.num_hidden_layers * n_patch * block_macs * mult("vision")
        plan = plan_windows(grids, config.merge_size, v.window_size)
        full = v.fullatt_block_indexes
        for i in range(v.num_hidden_layers if attention else 0):
            lens = plan.full_lens if (full is None or i in full) else plan.window_lens
            flops += 6.0 * sum(s * s * c * 2 for s in lens)
        units = n_patch // config.merge_size ** 2
        flops += units * (4 * c * h + h * h) * mult("connector")
    return flops


_PEAK_CACHE: dict[str, float] = {}


def measure_peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                       size: int = 1024, seconds: float = 0.3) -> float:
    """Sustained matmul FLOP/s on this device (fp32 on CPU, bf16 on CUDA), measured once per process."""
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    key = f"{device}:{dtype}:{torch.get_num_threads()}"
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    gen = torch.Generator(device=device).manual_seed(0)  # leave the global RNG alone (exact resume)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    n, start = 0, time.perf_counter()
    while True:
        a @ b
        n += 1
        if n % 4 == 0:
            sync()
            if time.perf_counter() - start > seconds:
                break
    elapsed = time.perf_counter() - start
    peak = 2.0 * size ** 3 * n / elapsed
    _PEAK_CACHE[key] = peak
    return peak


# ---- run metadata -------------------------------------------------------------------------------------------
def run_metadata(world_size: int, device: torch.device, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import navil

    versions = {"navil": navil.__version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("tokenizers", "safetensors", "numpy", "PIL", "yaml", "tqdm"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            pass
    if "transformers" in sys.modules:
        versions["transformers"] = sys.modules["transformers"].__version__
    return {
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size,
        "device": str(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "versions": versions,
        **(extra or {}),
    }


# ---- logging --------------------------------------------------------------------------------------------------
class MetricsLogger:
    """Appends one JSON object per logged step to OUT/metrics.jsonl (rank 0), mirrors scalars to TensorBoard
    when it is importable, and drives a tqdm progress bar."""

    def __init__(self, out: Path, enabled: bool, start_step: int, max_steps: int, tensorboard: bool = True,
                 progress: bool = True) -> None:
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        self.bar = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)
            except ImportError:  # tensorboard not installed
                self.tb = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                            mininterval=0.5, file=sys.stderr)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        if self.tb is not None:
            for k, val in record.items():
                if isinstance(val, (int, float)) and not isinstance(val, bool) and k != "step" and math.isfinite(val):
                    self.tb.add_scalar(f"train/{k}", val, record["step"])

    def progress(self, step: int, record: dict[str, Any] | None) -> None:
        if self.bar is None:
            return
        self.bar.update(step - self.bar.n)
        if record is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 tok_s=f"{record['tokens_per_s']:.0f}", mfu=f"{record['mfu']:.1%}", refresh=False)

    def write_message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
