"""FSDP2 under torchrun (gloo, 2 processes on CPU) against one process at the same global batch.

The data mixes the synthetic image set with text-only conversations, so that some packs have no image
(the trainer then adds a zero-loss dummy image under FSDP) and 4 packs per step give gradient accumulation
on both sides (4 micro-batches in one process, 2 per rank with FSDP's gradient sync on the last only).

Slow (several torchrun launches): run with `pytest -m slow tests/test_train_distributed.py`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "tiny-smoke.yaml"
COMMON = ["data.synthetic.n=24", "data.max_tokens=512", "data.max_patches=512", "progress=false",
          "tensorboard=false", "max_steps=10", "save_every=5", "keep_last=5", "batch.global_packs=4"]

pytestmark = pytest.mark.slow


def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(extra or {})}


def one_process(args: list[str], extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "navil", "train", str(SMOKE), *args, "threads=1"], cwd=REPO,
                          env=_env(extra_env), capture_output=True, text=True, timeout=300, check=False)


def two_processes(args: list[str], extra_env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "navil", "train", str(SMOKE), *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(extra_env), capture_output=True, text=True, timeout=300,
                          check=False)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    from navil.checkpoint.io import read_tensors

    return read_tensors(ckpt / "model")


def text_only_source(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "text.jsonl"
    with open(path, "w") as f:
        for i in range(40):
            a, b = (7 * i) % 50 + 1, (11 * i) % 50 + 1
            f.write(json.dumps({"conversations": [{"from": "human", "value": f"What is {a} plus {b}?"},
                                                  {"from": "gpt", "value": str(a + b)}]}) + "\n")
    return f"data.sources=[{{path: {path}, weight: 3}}]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    common = COMMON + [f"data.synthetic.dir={base / 'data'}", text_only_source(base / "text")]
    single, double = base / "single", base / "double"
    r = one_process(common + [f"out={single}"])
    assert r.returncode == 0, r.stderr[-4000:]
    r = two_processes(common + [f"out={double}"])
    assert r.returncode == 0, r.stderr[-4000:]
    assert "world size 2 (FSDP2)" in r.stderr
    return base, common, single, double


def test_fsdp_two_processes_equal_one_process(runs):
    _, _, single, double = runs
    a, b = losses(single), losses(double)
    assert len(a) == len(b) == 10
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)
    assert a[-1] < a[0]
    run = json.loads((double / "run.json").read_text())
    assert run["world_size"] == 2 and run["fsdp"] and run["grad_accum"] == 2
    assert json.loads((single / "run.json").read_text())["grad_accum"] == 4
    # rank 0 gathered full state dicts: the FSDP checkpoint is a normal model folder, close to the 1-process one
    import navil

    navil.load_model(double / "checkpoints" / "step-000010" / "model")
    ta, tb = tensors(single / "checkpoints" / "step-000010"), tensors(double / "checkpoints" / "step-000010")
    assert ta.keys() == tb.keys()
    assert max((ta[k] - tb[k]).abs().max().item() for k in ta) < 1e-4
    assert sorted(p.name for p in (double / "checkpoints" / "step-000010" / "rng").iterdir()) == \
        ["rank0.json", "rank0.safetensors", "rank1.json", "rank1.safetensors"]


def test_fsdp_exact_resume_after_kill(runs):
    base, common, _, double = runs
    out = base / "double-crash"
    args = common + [f"out={out}"]
    r = two_processes(args, {"NAVIL_TEST_CRASH_AT_STEP": "7"})
    assert r.returncode != 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000005"]
    r = two_processes(args + ["--resume"])
    assert r.returncode == 0, r.stderr[-4000:]
    assert losses(out) == losses(double)
    assert (out / "checkpoints" / "step-000010" / "model" / "model.safetensors").read_bytes() == \
        (double / "checkpoints" / "step-000010" / "model" / "model.safetensors").read_bytes()


def test_resume_one_process_checkpoint_with_two_processes(runs):
    base, common, single, _ = runs
    out = base / "switch"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(single / "checkpoints" / "step-000005", out / "checkpoints" / "step-000005")
    r = two_processes(common + [f"out={out}", "--resume"])
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = losses(single), losses(out)
    assert b[:5] == a[:5]  # restored from the checkpoint's metrics
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)
