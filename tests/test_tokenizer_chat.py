"""Tokenizer loading and chat-prompt construction vs the official reference fixtures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from navil.errors import NavilError
from navil.processing.chat import (
    DEFAULT_SYSTEM_MESSAGE,
    build_chat_prompt,
    expand_image_placeholders,
    get_template,
    image_block,
    postprocess_answer,
    render_conversation,
)
from navil.processing.tokenizer import NAVIL_SPECIAL_TOKENS, NavilTokenizer, load_tokenizer

QUESTION = "What is in the image?"
ANSWER = "Colored shapes on a gradient."
SYS = DEFAULT_SYSTEM_MESSAGE


# ------------------------------------------------------------------------------------------------ fixtures


def _fixture(fixture_dir: Path) -> tuple[dict, dict, str]:
    inputs = load_file(str(fixture_dir / "inputs.safetensors"))
    config = json.loads((fixture_dir / "config.json").read_text(encoding="utf-8"))
    prompt = (fixture_dir / "prompt.txt").read_text(encoding="utf-8")
    return inputs, config, prompt


def test_fixture_prompt_and_ids(fixture_dir: Path) -> None:
    inputs, config, ref_prompt = _fixture(fixture_dir)
    tok = load_tokenizer(fixture_dir)
    prompt = build_chat_prompt(config["template"], QUESTION, inputs["image_grid_thw"], inputs["num_scales"])
    assert prompt == ref_prompt
    assert tok.encode(prompt) == inputs["gen_input_ids"][0].tolist()
    assert tok.encode(prompt + ANSWER + "<|im_end|>") == inputs["input_ids"][0].tolist()
    # plain-list inputs give the same prompt as tensors
    assert (
        build_chat_prompt(
            config["template"], QUESTION, inputs["image_grid_thw"].tolist(), inputs["num_scales"].tolist()
        )
        == ref_prompt
    )


def test_fixture_special_tokens_and_bos(fixture_dir: Path) -> None:
    meta = json.loads((fixture_dir / "meta.json").read_text(encoding="utf-8"))["toy_tokenizer"]
    tok = load_tokenizer(fixture_dir)
    ids = tok.special_token_ids
    assert ids.navil_token_ids == [meta["special"][t] for t in NAVIL_SPECIAL_TOKENS]
    assert ids.img_context == meta["special"]["<IMG_CONTEXT>"]
    assert ids.im_end == meta["special"]["<|im_end|>"] and ids.im_start == meta["special"]["<|im_start|>"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (meta["bos"], meta["eos"], meta["pad"])
    assert tok.vocab_size == 273
    assert tok.add_bos_token == meta["add_bos"]
    assert (tok.encode("hi")[:1] == [meta["bos"]]) == meta["add_bos"]
    assert tok.encode("hi", add_special_tokens=False) == [3 + ord("h"), 3 + ord("i")]


def test_fixture_answer_labels_from_segments(fixture_dir: Path) -> None:
    """Tokenizing render_conversation segments reproduces input_ids and labels_answer_only."""
    inputs, config, _ = _fixture(fixture_dir)
    tok = load_tokenizer(fixture_dir)
    n_images = len(inputs["num_scales"])
    turns = [("<image>\n" * n_images + QUESTION, ANSWER)]
    segments = render_conversation(config["template"], turns)
    assert [flag for _, flag in segments] == [False, True]
    assert segments[1][0] == ANSWER + "<|im_end|>"
    ids: list[int] = []
    labels: list[int] = []
    for i, (text, is_answer) in enumerate(segments):
        if "<image>" in text:
            text = expand_image_placeholders(text, inputs["image_grid_thw"], inputs["num_scales"])
        piece = tok.encode(text, add_special_tokens=(i == 0))
        ids += piece
        labels += piece if is_answer else [-100] * len(piece)
    assert ids == inputs["input_ids"][0].tolist()
    assert labels == inputs["labels_answer_only"][0].tolist()


def test_fixture_decode_skip_special(fixture_dir: Path) -> None:
    _, _, prompt = _fixture(fixture_dir)
    tok = load_tokenizer(fixture_dir)
    ids = tok.encode(prompt)
    assert tok.decode(ids).removeprefix("<s>") == prompt
    plain = tok.decode(ids, skip_special_tokens=True)
    for special in (*NAVIL_SPECIAL_TOKENS, "<|im_end|>", "<|im_start|>", "<s>"):
        assert special not in plain
    assert plain.startswith("system\n" + SYS) and plain.endswith(
        "assistant\n" + ("<think>\n\n</think>\n\n" if "<think>" in prompt else "")
    )


def test_fixture_save_load_roundtrip(fixture_dir: Path, tmp_path: Path) -> None:
    _, _, prompt = _fixture(fixture_dir)
    tok = load_tokenizer(fixture_dir)
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    again = load_tokenizer(tmp_path)
    assert again.encode(prompt) == tok.encode(prompt)
    assert again.special_token_ids == tok.special_token_ids
    assert again.add_bos_token == tok.add_bos_token and again.vocab_size == tok.vocab_size


# ------------------------------------------------------------------------------------------- chat templates


def test_templates_single_turn_text_only() -> None:
    assert build_chat_prompt("internlm2-chat", "Hi") == (
        f"<|im_start|>system\n{SYS}<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n"
    )
    assert build_chat_prompt("qwen3-chat", "Hi", system_message="S") == (
        "<|im_start|>system\nS<|im_end|><|im_start|>user\nHi<|im_end|>"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert build_chat_prompt("Hermes-2", "Hi") == build_chat_prompt("internlm2-chat", "Hi")
    assert get_template("Hermes-2").stop_str == "<|endoftext|>"
    with pytest.raises(NavilError, match="unknown chat template"):
        build_chat_prompt("vicuna", "Hi")


def test_multi_turn_rendering() -> None:
    grid = [[1, 2, 4]]
    block = "<img><IMG_CONTEXT><IMG_CONTEXT><IMG_LINE_BREAK><IMG_FRAME_BREAK></img>"
    history = [("<image>\nWhat is it?", "A cat."), ("Color?", "Black.")]
    prompt = build_chat_prompt("qwen3-chat", "Size?", grid, [1], history=history, system_message="S")
    asst = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert prompt == (
        "<|im_start|>system\nS<|im_end|>"
        f"<|im_start|>user\n{block}\nWhat is it?<|im_end|>{asst}A cat.<|im_end|>"
        f"<|im_start|>user\nColor?<|im_end|>{asst}Black.<|im_end|>"
        f"<|im_start|>user\nSize?<|im_end|>{asst}"
    )
    # history without images: no "<image>\n" prepended to later questions
    text_hist = build_chat_prompt("internlm2-chat", "Q2", history=[("Q1", "A1")])
    assert text_hist.endswith(
        "user\nQ1<|im_end|><|im_start|>assistant\nA1<|im_end|>"
        "<|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n"
    )


def test_render_conversation_segments() -> None:
    turns = [("<image>\nQ1", "A1"), ("Q2", "A2")]
    segments = render_conversation("internlm2-chat", turns, system_message="S")
    assert segments == [
        (
            "<|im_start|>system\nS<|im_end|><|im_start|>user\n<image>\nQ1<|im_end|><|im_start|>assistant\n",
            False,
        ),
        ("A1<|im_end|>", True),
        ("<|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n", False),
        ("A2<|im_end|>", True),
    ]
    full = "".join(t for t, _ in segments)
    assert full == get_template("internlm2-chat").render(turns, "S")
    # the generation prompt is the conversation up to the last open assistant role
    prompt = build_chat_prompt(
        "internlm2-chat", "Q2", [[1, 2, 2]], [1], history=[turns[0]], system_message="S"
    )
    assert prompt == expand_image_placeholders(full[: -len("A2<|im_end|>")], [[1, 2, 2]], [1])


def test_image_block_layout() -> None:
    # two scales: 2x2 grid -> 1 row of 1, 4x6 -> 2 rows of 3
    c, lb, fb = "<IMG_CONTEXT>", "<IMG_LINE_BREAK>", "<IMG_FRAME_BREAK>"
    assert image_block([[1, 2, 2], [1, 4, 6]]) == f"<img>{c}{lb}{fb}{c * 3}{lb}{c * 3}{lb}{fb}</img>"
    assert image_block([[2, 2, 2]]) == f"<img>{c}{lb}{fb}{c}{lb}{fb}</img>"  # t frames
    assert image_block([[1, 3, 6]], merge_size=3) == f"<img>{c * 2}{lb}{fb}</img>"
    with pytest.raises(NavilError, match="divisible"):
        image_block([[1, 3, 4]])


def test_images_prepended_once_per_image() -> None:
    prompt = build_chat_prompt("internlm2-chat", "Q", [[1, 2, 2], [1, 4, 4], [1, 2, 2]], [2, 1])
    user = prompt.split("<|im_start|>user\n")[1]
    assert user.count("<img>") == 2 and user.count("<IMG_FRAME_BREAK>") == 3
    assert user.endswith("</img>\nQ<|im_end|><|im_start|>assistant\n")
    # a question that already has placeholders is used as is (placement kept)
    p2 = build_chat_prompt("internlm2-chat", "A <image> B", [[1, 2, 2]], [1])
    assert "user\nA <img><IMG_CONTEXT><IMG_LINE_BREAK><IMG_FRAME_BREAK></img> B<|im_end|>" in p2


def test_placeholder_count_errors() -> None:
    with pytest.raises(NavilError, match=r"2 <image> placeholder\(s\) but 1 image"):
        build_chat_prompt("internlm2-chat", "<image><image>Q", [[1, 2, 2]], [1])
    with pytest.raises(NavilError, match=r"0 <image> placeholder\(s\) but 1 image"):
        build_chat_prompt("internlm2-chat", "Q", [[1, 2, 2]], [1], history=[("Q0", "A0")])
    with pytest.raises(NavilError, match=r"1 <image> placeholder\(s\) but 0 image"):
        build_chat_prompt("internlm2-chat", "<image>\nQ")
    with pytest.raises(NavilError, match="sums to 2"):
        build_chat_prompt("internlm2-chat", "Q", [[1, 2, 2]], [2])
    with pytest.raises(NavilError, match="num_scales is required"):
        expand_image_placeholders("<image>", [[1, 2, 2]], None)


def test_postprocess_answer() -> None:
    assert postprocess_answer("  A red square. <|im_end|>junk") == "A red square."
    assert postprocess_answer("A red square.<|im_end") == "A red square."
    assert postprocess_answer("A red square.<|im_end|") == "A red square."
    assert postprocess_answer("A red square.<|im") == "A red square."
    assert postprocess_answer("\nplain\n") == "plain"


# ------------------------------------------------------------------------------ plain-LLM tokenizer.json


def _byte_bpe(folder: Path, post_bos: bool, config: dict) -> Path:
    """A tiny byte-level BPE tokenizer.json (no merges) with <s>, </s>, <|im_start|>, <|im_end|> only."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({ch: i for i, ch in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<s>", "</s>", "<|im_start|>", "<|im_end|>")]
    )
    if post_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 256)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_missing_navil_tokens_then_add(tmp_path: Path) -> None:
    folder = _byte_bpe(tmp_path / "plain", post_bos=False, config={"eos_token": "<|im_end|>"})
    with pytest.raises(NavilError, match="<IMG_CONTEXT>"):
        load_tokenizer(folder)
    tok = load_tokenizer(folder, require_navil_tokens=False)
    assert tok.special_token_ids.img_context is None and tok.special_token_ids.im_end == 259
    assert tok.vocab_size == 260 and tok.bos_token_id is None and tok.eos_token_id == 259
    assert len(tok.encode("<img>")) == 5  # plain bytes before the token is added

    assert tok.add_special_tokens(list(NAVIL_SPECIAL_TOKENS)) == 12
    assert tok.special_token_ids.navil_token_ids == list(range(260, 272))
    assert tok.vocab_size == 272
    assert tok.add_special_tokens(["<img>", "<|im_end|>", "<extra>"]) == 1  # only <extra> is new
    assert tok.token_to_id("<extra>") == 272

    text = "<img><IMG_CONTEXT><IMG_LINE_BREAK></img>hi<|im_end|>"
    ids = tok.encode(text)
    assert ids[:4] == [264, 262, 270, 263] and ids[-1] == 259 and len(ids) == 7
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "hi"

    tok.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")  # now has all NaViL tokens
    assert again.encode(text) == ids and again.special_token_ids == tok.special_token_ids
    assert again.eos_token_id == 259


def test_add_bos_token_config_overrides_post_processor(tmp_path: Path) -> None:
    no_post = load_tokenizer(
        _byte_bpe(tmp_path / "a", False, {"bos_token": "<s>", "add_bos_token": True}),
        require_navil_tokens=False,
    )
    assert no_post.encode("a")[0] == 256 and len(no_post.encode("a")) == 2
    assert no_post.encode("a", add_special_tokens=False) == no_post.encode("a")[1:]
    with_post = load_tokenizer(
        _byte_bpe(tmp_path / "b", True, {"bos_token": "<s>", "add_bos_token": False}),
        require_navil_tokens=False,
    )
    assert with_post.encode("a") == with_post.encode("a", add_special_tokens=False)
    implicit = load_tokenizer(
        _byte_bpe(tmp_path / "c", True, {"bos_token": "<s>"}), require_navil_tokens=False
    )
    assert implicit.add_bos_token and implicit.encode("a")[0] == 256


def test_config_declared_added_tokens(tmp_path: Path) -> None:
    decl = {str(260 + i): {"content": t, "special": True} for i, t in enumerate(NAVIL_SPECIAL_TOKENS)}
    folder = _byte_bpe(tmp_path / "d", False, {"added_tokens_decoder": decl})
    tok = load_tokenizer(folder)
    assert tok.special_token_ids.navil_token_ids == list(range(260, 272))
    bad = {"300": {"content": "<img>", "special": True}}
    with pytest.raises(NavilError, match="declares '<img>' with id 300"):
        load_tokenizer(_byte_bpe(tmp_path / "e", False, {"added_tokens_decoder": bad}), False)


def test_no_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(NavilError, match="neither tokenizer.json nor tokenizer.model"):
        load_tokenizer(tmp_path)


# ------------------------------------------------------------------------------ sentencepiece (InternLM2)


def _sp_folder(folder: Path, added_tokens_json: bool = False) -> Path:
    spm = pytest.importorskip("sentencepiece")
    lines = [
        "What is in the image? Colored shapes on a gradient.",
        "hello world, this is a tiny sentencepiece model for navil tests.",
        "The quick brown fox jumps over the lazy dog.",
        "system user assistant answer question think",
    ] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=100,
        model_type="bpe",
        user_defined_symbols=["<|im_start|>", "<|im_end|>", "\n"],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    size = spm.SentencePieceProcessor(model_proto=buf.getvalue()).get_piece_size()
    decl = {
        str(size + i): {
            "content": t,
            "special": True,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
        }
        for i, t in enumerate(NAVIL_SPECIAL_TOKENS)
    }
    decl.update(
        {"3": {"content": "<|im_start|>", "special": True}, "4": {"content": "<|im_end|>", "special": True}}
    )
    if added_tokens_json:  # older layout: {content: id} in added_tokens.json
        added = {entry["content"]: int(i) for i, entry in decl.items()}
        (folder / "added_tokens.json").write_text(json.dumps(added), encoding="utf-8")
        decl = {}
    config = {
        "tokenizer_class": "InternLM2Tokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "added_tokens_decoder": decl,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize("added_tokens_json", [False, True])
def test_sentencepiece_tokenizer(tmp_path: Path, added_tokens_json: bool) -> None:
    folder = _sp_folder(tmp_path / "sp", added_tokens_json)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = load_tokenizer(folder)
    assert tok.backend == "sentencepiece" and tok.vocab_size == sp.get_piece_size() + 12
    ids = tok.special_token_ids
    assert ids.navil_token_ids == list(range(sp.get_piece_size(), sp.get_piece_size() + 12))
    assert (ids.im_start, ids.im_end) == (3, 4)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)

    prompt = build_chat_prompt(
        "internlm2-chat", "What is in the image?", [[1, 2, 4]], [1], system_message="system"
    )
    enc = tok.encode(prompt)
    expected = [
        1,
        3,
        *sp.encode("system\nsystem"),
        4,
        3,
        *sp.encode("user\n"),
        ids.img_start,
        ids.img_context,
        ids.img_context,
        ids.img_line_break,
        ids.img_frame_break,
        ids.img_end,
        *sp.encode("\nWhat is in the image?"),
        4,
        3,
        *sp.encode("assistant\n"),
    ]
    assert enc == expected
    assert tok.decode(enc) == "<s>" + prompt
    assert tok.decode(enc, skip_special_tokens=True) == (
        "system\nsystemuser\n\nWhat is in the image?assistant\n"
    )
    assert postprocess_answer(tok.decode(tok.encode("the dog.<|im_end|>", False), True)) == "the dog."

    assert tok.add_special_tokens(["<extra>", "<img>"]) == 1
    assert tok.token_to_id("<extra>") == sp.get_piece_size() + 12
    tok.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.backend == "sentencepiece"
    assert (
        again.encode(prompt + "<extra>")
        == tok.encode(prompt + "<extra>")
        == enc + [tok.token_to_id("<extra>")]
    )
    assert isinstance(again, NavilTokenizer) and again.special_token_ids == tok.special_token_ids
