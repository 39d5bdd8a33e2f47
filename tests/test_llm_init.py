"""init_from_llm: HF LLM checkpoints (Llama, Qwen2, Qwen3, hand-made InternLM2) -> function-preserving NaViL."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import navil
from navil.checkpoint.llm_init import (
    add_navil_tokens,
    init_from_llm,
    init_weights,
    llm_config_from_hf,
    save_with_tokenizer,
)
from navil.config import LLMConfig
from navil.errors import ConfigError
from navil.model.navil import NaViL
from navil.processing.tokenizer import IM_END_TOKEN, IM_START_TOKEN, NAVIL_SPECIAL_TOKENS, load_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB = 300
SHAPES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": VOCAB}
MAX_DIFF = 1e-5


# ---- tiny checkpoints, built here ------------------------------------------------------------------------
def write_tokenizer(folder: Path, n_words: int, specials: tuple[str, ...] = (), words: tuple[str, ...] = ()) -> None:
    """A WordLevel tokenizer.json with `n_words` plain words (`words` among them) + added `specials`."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2}
    for w in words:
        vocab[w] = len(vocab)
    while len(vocab) < n_words:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if specials:
        tok.add_special_tokens(list(specials))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "[UNK]"}))


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial weights everywhere (norm weights around 1, biases non-zero)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(1 + 0.2 * noise if "norm" in name else 0.1 * noise)
    return model.eval()


def hf_llm(folder: Path, kind: str, seed: int = 0, **kw) -> torch.nn.Module:
    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[kind]
    cfg = cls[0](**SHAPES, **kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = randomize(cls[1](cfg), seed)
    return model


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """Llama, untied, no <|im_*|> tokens, tokenizer fills the table: adding 14 tokens grows the vocab."""
    d = tmp_path_factory.mktemp("llama")
    model = hf_llm(d, "llama", seed=1, attention_bias=True, rope_theta=50000.0, bos_token_id=1, eos_token_id=2)
    model.save_pretrained(d)
    write_tokenizer(d, VOCAB - 4, words=("<box>",))  # <box> is a plain word the LLM already knows
    return d, model


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    """Qwen2, tied embeddings, has <|im_*|>, spare rows in the table: the NaViL tokens fit, no growth."""
    d = tmp_path_factory.mktemp("qwen2")
    model = hf_llm(d, "qwen2", seed=2, tie_word_embeddings=True)
    model.save_pretrained(d)
    write_tokenizer(d, 250, specials=(IM_START_TOKEN, IM_END_TOKEN))
    return d, model


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    """Qwen3, explicit head_dim != hidden/heads, rope_theta 1e6, sharded safetensors."""
    d = tmp_path_factory.mktemp("qwen3")
    model = hf_llm(d, "qwen3", seed=3, head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    model.save_pretrained(d, max_shard_size="100KB")
    write_tokenizer(d, 280, specials=(IM_START_TOKEN, IM_END_TOKEN))
    assert (d / "model.safetensors.index.json").is_file()
    return d, model


def internlm2_fuse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, nh: int, nkv: int) -> torch.Tensor:
    """Separate q/k/v rows -> InternLM2 interleaved wqkv rows [nkv groups][r q heads, k, v][hd]."""
    hd, r = k.shape[0] // nkv, nh // nkv
    groups = []
    for g in range(nkv):
        groups += [q[(g * r + s) * hd:(g * r + s + 1) * hd] for s in range(r)]
        groups += [k[g * hd:(g + 1) * hd], v[g * hd:(g + 1) * hd]]
    return torch.cat(groups)


@pytest.fixture(scope="module")
def internlm2_dir(tmp_path_factory):
    """An InternLM2-layout checkpoint written by hand from a Llama with the same shapes."""
    d = tmp_path_factory.mktemp("internlm2")
    from safetensors.torch import save_file

    ref = hf_llm(d, "llama", seed=4, rope_theta=1e6, rms_norm_eps=1e-5)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    nh, nkv = SHAPES["num_attention_heads"], SHAPES["num_key_value_heads"]
    out = {"model.tok_embeddings.weight": sd["model.embed_tokens.weight"], "model.norm.weight": sd["model.norm.weight"],
           "output.weight": sd["lm_head.weight"]}
    for i in range(SHAPES["num_hidden_layers"]):
        s, t = f"model.layers.{i}.", f"model.layers.{i}."
        out[t + "attention.wqkv.weight"] = internlm2_fuse(sd[s + "self_attn.q_proj.weight"],
                                                          sd[s + "self_attn.k_proj.weight"],
                                                          sd[s + "self_attn.v_proj.weight"], nh, nkv)
        out[t + "attention.wo.weight"] = sd[s + "self_attn.o_proj.weight"]
        out[t + "feed_forward.w1.weight"] = sd[s + "mlp.gate_proj.weight"]
        out[t + "feed_forward.w3.weight"] = sd[s + "mlp.up_proj.weight"]
        out[t + "feed_forward.w2.weight"] = sd[s + "mlp.down_proj.weight"]
        out[t + "attention_norm.weight"] = sd[s + "input_layernorm.weight"]
        out[t + "ffn_norm.weight"] = sd[s + "post_attention_layernorm.weight"]
    save_file({k: v.contiguous() for k, v in out.items()}, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps({
        "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", **SHAPES, "bias": False,
        "rope_theta": 1e6, "rope_scaling": None, "rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
        "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0}))
    write_tokenizer(d, 270, specials=(IM_END_TOKEN, IM_START_TOKEN))
    return d, ref


def text_ids(batch: int = 2, length: int = 24, seed: int = 0, high: int = 240) -> torch.Tensor:
    """Plain word ids (the checkpoints' NaViL-token words sit at id 3 only)."""
    return torch.randint(4, high, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def max_text_diff(model: NaViL, ref: torch.nn.Module, ids: torch.Tensor) -> float:
    want = ref(input_ids=ids).logits.float()
    got = model(input_ids=ids).logits[..., :want.shape[-1]]
    return float((got - want).abs().max())


# ---- function preservation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["llama_dir", "qwen2_dir", "qwen3_dir", "internlm2_dir"])
def test_text_logits_match_source_llm(name, request):
    folder, ref = request.getfixturevalue(name)
    model = init_from_llm(folder, "tiny")
    diff = max_text_diff(model, ref, text_ids())
    print(f"{name}: max |logit diff| = {diff:.2e}")
    assert diff <= MAX_DIFF
    fam = json.loads((folder / "config.json").read_text())["model_type"]
    assert model.config.llm.family == fam
    assert model.config.template == ("internlm2-chat" if fam == "internlm2" else "qwen3-chat")


def test_config_mapping(llama_dir, qwen2_dir, qwen3_dir, internlm2_dir):
    llama = init_from_llm(llama_dir[0]).config.llm
    assert llama.attention_bias and not llama.qk_norm and llama.rope_theta == 50000.0
    assert llama.bos_token_id == 1 and llama.eos_token_id == 2
    qwen2 = init_from_llm(qwen2_dir[0])
    assert qwen2.config.llm.tie_word_embeddings and qwen2.config.llm.attention_bias
    assert qwen2.language_model.lm_head.weight is qwen2.language_model.embed.weight
    assert qwen2.language_model.layers[0].attn.o.bias is None
    qwen3 = init_from_llm(qwen3_dir[0]).config.llm
    assert qwen3.qk_norm and qwen3.head_dim == 32 and qwen3.rope_theta == 1e6
    intern = init_from_llm(internlm2_dir[0]).config.llm
    assert intern.family == "internlm2" and intern.resolved_head_dim == 16 and intern.rms_norm_eps == 1e-5


# ---- visual experts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["qwen3_dir", "internlm2_dir", "qwen2_dir"])
def test_visual_twins_are_copies(name, request):
    model = init_from_llm(request.getfixturevalue(name)[0])
    sd = model.state_dict()
    twins = [k for k in sd if "_visual" in k]
    kinds = {"qkv_visual", "o_visual", "mlp_visual"} | ({"q_norm_visual", "k_norm_visual"}
                                                        if model.config.llm.qk_norm else set())
    assert {part for k in twins for part in k.split(".") if part.endswith("_visual")} == kinds
    for k in twins:
        text = k.replace("_visual", "")
        assert torch.equal(sd[k], sd[text]), k
        assert sd[k].data_ptr() != sd[text].data_ptr(), f"{k} must be a copy, not shared storage"


@torch.no_grad()
def test_copied_experts_do_not_change_image_forward(qwen3_dir):
    """Qwen3-VE with twins copied computes exactly what the same model without experts computes."""
    with_experts = init_from_llm(qwen3_dir[0], seed=5)
    without = init_from_llm(qwen3_dir[0], seed=5, attention_experts=False, ffn_experts=False)
    assert not hasattr(without.language_model.layers[0].attn, "qkv_visual")
    tok = with_experts.tokenizer
    sp = tok.special_token_ids
    ids = torch.tensor([[5, 6, 7, sp.img_start, *[sp.img_context] * 4, sp.img_end, 8, 9, 10]])
    g = torch.Generator().manual_seed(0)
    pv, thw = torch.randn(16, 3, 16, 16, generator=g), torch.tensor([[1, 4, 4]])
    a = with_experts(input_ids=ids, pixel_values=pv, image_grid_thw=thw).logits
    b = without(input_ids=ids, pixel_values=pv, image_grid_thw=thw).logits
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() <= MAX_DIFF
    # ...which is a real check: random experts (same seed, same vision weights) change the image tokens' logits
    random_experts = init_from_llm(qwen3_dir[0], seed=5, copy_visual_experts=False)
    assert not torch.equal(random_experts.language_model.layers[0].mlp_visual.down.weight,
                           random_experts.language_model.layers[0].mlp.down.weight)
    c = random_experts(input_ids=ids, pixel_values=pv, image_grid_thw=thw).logits
    assert (c - a).abs().max() > 1e-3
    assert (c[:, :3] - a[:, :3]).abs().max() <= MAX_DIFF  # text before the image is unaffected


# ---- tokenizer, vocabulary, special-token table -----------------------------------------------------------
def test_special_tokens_added_and_vocab_grown(llama_dir):
    folder, ref = llama_dir
    before = load_tokenizer(folder, require_navil_tokens=False)
    assert before.token_to_id(IM_START_TOKEN) is None and before.vocab_size == VOCAB - 4
    model = init_from_llm(folder)
    tok = model.tokenizer
    ids = tok.special_token_ids
    assert ids.im_start is not None and ids.im_end is not None
    assert model.end_of_turn_token_id == ids.im_end  # generation stops there by default
    assert model.config.special_token_ids == ids.navil_token_ids
    assert [tok.token_to_id(t) for t in NAVIL_SPECIAL_TOKENS] == ids.navil_token_ids
    assert ids.box_start == 3  # the pre-existing word keeps its id
    # 296 words + 2 chat tokens + 11 new NaViL tokens = 309 > 300: the table grew.
    assert tok.vocab_size == 309 and model.config.llm.vocab_size == 309
    emb, head = model.language_model.embed.weight, model.language_model.lm_head.weight
    assert emb.shape[0] == head.shape[0] == 309
    src_emb, src_head = ref.model.embed_tokens.weight, ref.lm_head.weight
    assert torch.equal(emb[:VOCAB], src_emb) and torch.equal(head[:VOCAB], src_head)
    n_real = VOCAB - 4
    assert torch.allclose(emb[VOCAB:], src_emb[:n_real].mean(0).expand(9, -1), atol=1e-6)
    assert torch.allclose(head[VOCAB:], src_head[:n_real].mean(0).expand(9, -1), atol=1e-6)
    # special-token table: <box> (row 1) was a known word -> its embedding; the others -> the mean.
    table = model.special_token_embedding.weight
    assert torch.equal(table[1], src_emb[3])
    others = [i for i in range(12) if i != 1]
    assert torch.allclose(table[others], src_emb[:n_real].mean(0).expand(11, -1), atol=1e-6)
    # the new tokens resolve when encoding text
    enc = tok.encode("w10 <IMG_CONTEXT> <img> </img> <|im_end|>", add_special_tokens=False)
    assert enc[1:] == [ids.img_context, ids.img_start, ids.img_end, ids.im_end]


def test_no_growth_when_tokens_fit(qwen2_dir):
    folder, ref = qwen2_dir
    model = init_from_llm(folder)
    tok = model.tokenizer
    assert tok.vocab_size == 250 + 2 + 12 and model.config.llm.vocab_size == VOCAB
    assert min(model.config.special_token_ids) == 252
    assert torch.equal(model.language_model.embed.weight, ref.model.embed_tokens.weight)
    mean = ref.model.embed_tokens.weight[:252].mean(0)
    assert torch.allclose(model.special_token_embedding.weight, mean.expand(12, -1), atol=1e-6)


def test_overrides_dtype_and_bad_arguments(qwen3_dir):
    folder, _ = qwen3_dir
    model = init_from_llm(folder, template="internlm2-chat", min_dynamic_patch=8, max_dynamic_patch=64,
                          dtype=torch.float64)
    assert model.config.template == "internlm2-chat" and model.config.max_dynamic_patch == 64
    assert all(p.dtype == torch.float64 for p in model.parameters())
    with pytest.raises(ConfigError, match="not_a_field"):
        init_from_llm(folder, not_a_field=1)
    with pytest.raises(ConfigError, match="vision preset"):
        init_from_llm(folder, "huge-vit")
    with pytest.raises(ConfigError, match="llm_config"):
        init_from_llm(folder, llm_config=LLMConfig())


# ---- save -> load ------------------------------------------------------------------------------------------
@torch.no_grad()
@pytest.mark.parametrize("name", ["llama_dir", "internlm2_dir"])
def test_save_pretrained_round_trip(name, request, tmp_path):
    folder, ref = request.getfixturevalue(name)
    model = init_from_llm(folder)
    model.save_pretrained(tmp_path / "out")
    back = navil.load_model(tmp_path / "out")
    assert back.config.special_token_ids == model.config.special_token_ids
    ids = text_ids(1, 16, seed=3)
    assert torch.equal(back(input_ids=ids).logits, model(input_ids=ids).logits)
    assert max_text_diff(back, ref, ids) <= MAX_DIFF
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    save_with_tokenizer(model, model.tokenizer, tmp_path / "out2")
    assert navil.load_model(tmp_path / "out2").config.special_token_ids == model.config.special_token_ids


# ---- from scratch ------------------------------------------------------------------------------------------
@torch.no_grad()
def test_from_scratch(tmp_path):
    write_tokenizer(tmp_path / "tok", 200)
    tok = load_tokenizer(tmp_path / "tok", require_navil_tokens=False)
    llm = LLMConfig(family="qwen3", vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = init_from_llm(None, "tiny", llm_config=llm, tokenizer=tok, seed=7)
    assert llm.vocab_size == 200, "the caller's config must not be modified"
    assert model.config.llm.vocab_size == 214 and model.tokenizer is tok
    assert model.config.special_token_ids == tok.special_token_ids.navil_token_ids
    logits = model(input_ids=text_ids(1, 12, high=200)).logits
    assert logits.shape == (1, 12, 214) and torch.isfinite(logits).all()
    w = model.language_model.layers[0].mlp.gate_up.weight
    assert 0.01 < float(w.std()) < 0.03 and float(w.abs().max()) <= 0.04 + 1e-6
    assert torch.equal(model.language_model.layers[0].mlp_visual.gate_up.weight, w)
    assert torch.equal(model.vision_model.encoder.layers[0].ls1, torch.full((64,), 0.1))
    assert torch.equal(model.language_model.norm.weight, torch.ones(64))
    again = init_from_llm(None, "tiny", llm_config=llm, tokenizer=tmp_path / "tok", seed=7)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="tokenizer"):
        init_from_llm(None, "tiny", llm_config=llm)


def test_init_weights_is_seeded_and_independent_of_llm():
    cfg = navil.config.tiny()
    cfg.special_token_ids = list(range(100, 112))
    a, b = NaViL(cfg), NaViL(cfg)
    init_weights(a, seed=3)
    init_weights(b, seed=3, llm=False)
    for k, v in a.state_dict().items():
        if not k.startswith("language_model."):
            assert torch.equal(v, b.state_dict()[k]), k
    assert float(a.mlp1[1].bias.detach().abs().max()) == 0.0 and torch.equal(a.mlp1[0].weight, torch.ones_like(a.mlp1[0].weight))


# ---- config errors -----------------------------------------------------------------------------------------
def test_unsupported_model_type_and_fields(tmp_path):
    base = {"model_type": "llama", **SHAPES}
    with pytest.raises(ConfigError, match="model_type.*'gpt2'"):
        llm_config_from_hf({**base, "model_type": "gpt2"})
    with pytest.raises(ConfigError, match="rope"):
        llm_config_from_hf({**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ConfigError, match="hidden_act"):
        llm_config_from_hf({**base, "hidden_act": "gelu"})
    with pytest.raises(ConfigError, match="use_sliding_window"):
        llm_config_from_hf({**base, "model_type": "qwen2", "use_sliding_window": True})
    with pytest.raises(ConfigError, match="num_attention_heads"):
        llm_config_from_hf({k: v for k, v in base.items() if k != "num_attention_heads"})
    scaled = llm_config_from_hf({**base, "rope_theta": 1e6, "rope_scaling": {"type": "dynamic", "factor": 2.0}})
    assert scaled.rope_scaling == {"rope_type": "dynamic", "factor": 2.0} and scaled.rope_theta == 1e6
    (tmp_path / "config.json").write_text(json.dumps({**base, "model_type": "mistral"}))
    write_tokenizer(tmp_path, 100)
    with pytest.raises(ConfigError, match="mistral"):
        init_from_llm(tmp_path)


def test_add_navil_tokens_is_idempotent(tmp_path):
    write_tokenizer(tmp_path, 50, specials=(IM_START_TOKEN,))
    tok = load_tokenizer(tmp_path, require_navil_tokens=False)
    first = add_navil_tokens(tok)
    assert all(v is None for v in first.values()) and tok.vocab_size == 50 + 1 + 1 + 12
    ids = tok.special_token_ids.navil_token_ids
    again = add_navil_tokens(tok)
    assert list(again.values()) == ids and tok.vocab_size == 64
