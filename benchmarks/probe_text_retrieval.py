"""Can the quickstart's decoder look up an attribute in its context? (binding, with the image taken out)

"What color is the star?" among several objects needs the answer token to find the object named in the question
and read its other attribute. This probe asks the same questions of the quickstart's text decoder (the `tiny`
preset's Qwen3 layout, trained from scratch) with the scene given as its caption instead of an image:

    user:      3 objects: a blue circle at the top right, an orange square at the bottom left and a yellow ...
               What color is the square? Answer with a single word.
    assistant: orange

so nothing visual can be the bottleneck. With `--bound` each object is one token of the caption ("a
blue_circle at the top right"), as on a visual token that carries both its object's colour and shape: the
lookup is then one content match, without the previous-token step that the words need. With `--spread`
the scene is laid out as an image's visual tokens are: each object 2-4 copies of its token between background
tokens, no location words. It trains on colour
and shape questions with a curriculum over the number of objects (`--curriculum`, "max objects:start
fraction"; `--question-first` puts the question before the caption, so that each object's tokens can already
compare themselves with it) and prints the held-out first-answer accuracy per category and number of objects
(1-5) a few times during training.

    python benchmarks/probe_text_retrieval.py --steps 1000
    python benchmarks/probe_text_retrieval.py --steps 1000 --bound
    python benchmarks/probe_text_retrieval.py --steps 300 --curriculum 1:0 --categories shape

Measured with this script (1 thread, seed 0, 1024-token packs, LR 3e-3; accuracy on 1 / 2 / 3 / 4 / 5 objects):

    --steps 1000 --curriculum 2:0                      colour 1.00 / 0.73 / 0.44 / 0.26 / 0.20,
                                                       shape  1.00 / 0.44 / 0.30 / 0.22 / 0.27
    the same with --llm '{"qk_norm": false}'           colour 0.88 / 0.53, shape 0.07 / 0.22 (worse)
    the same with --llm '{"num_hidden_layers": 6}'     colour 1.00 / 0.40, shape 0.20 / 0.50
    --steps 1000 --bound                               colour 1.00 / 0.53 / 0.60 / 0.42 / 0.20,
                                                       shape  1.00 / 0.67 / 0.61 / 0.56 / 0.50

    one question per scene (--questions 1), 800 steps: colour 1.00 / 0.53 / 0.44 / 0.37 / 0.24,
                                                       shape  1.00 / 0.50 / 0.65 / 0.28 / 0.23
    the same with --question-first                     colour 0.88 / 0.60 / 0.48 / 0.16 / 0.20,
                                                       shape  1.00 / 0.61 / 0.39 / 0.28 / 0.19
    --bound --questions 1, 800 steps                   colour 0.88 / 0.73 / 0.60 / 0.26 / 0.28,
                                                       shape  1.00 / 0.89 / 0.70 / 0.44 / 0.31
    the same with --question-first                     colour 1.00 / 0.80 / 0.64 / 0.58 / 0.68,
                                                       shape  1.00 / 0.67 / 0.57 / 0.61 / 0.31
    --spread --questions 1, 800 steps                  colour 1.00 / 0.93 / 0.96 / 0.79 / 0.76,
                                                       shape  1.00 / 1.00 / 1.00 / 1.00 / 0.96  (0.87 at step 640)

In words the lookup has not formed after 1,000 steps (nor after 3,000 in a scratch run, docs/quickstart.md);
with one token per object it starts to at ~800, and laid out as visual tokens are (several copies per object,
nothing else in between) it is nearly perfect at 800. The quickstart's text phase runs ~290 steps and stage 2
~720 (10-minute budget): the decoder can learn this lookup within the budget when each object's tokens carry
the same code for its colour and shape -- which the quickstart's visual tokens do not (docs/quickstart.md).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
from functools import partial
from pathlib import Path

import torch

from navil.checkpoint.llm_init import init_from_llm
from navil.data.synthetic import COLORS, SHAPES, format_question, iter_samples
from navil.processing.tokenizer import load_tokenizer
from navil.quickstart import Preset, Validator, _configs, _loader, _navil_kwargs, train_phase
from navil.quickstart_data import object_words_text, synthetic_vocabulary, write_word_tokenizer

_OBJECT = re.compile(rf"\b({'|'.join(COLORS)}) ({'|'.join(SHAPES)})\b")


def write_conversations(path: Path, split: str, n: int, start: int, categories: tuple[str, ...], max_objects: int,
                        questions: int, by_objects: bool = False, layout: str = "words",
                        question_first: bool = False) -> str:
    """Caption-in-context conversations: the first user turn is the scene's caption, then its question; later
    turns ask more questions about the same scene. `by_objects` tags each row's category with its object count
    ("color@3"), so the validator reports accuracy per count. `layout`: "words" (the caption as generated),
    "bound" (each object one token, "blue_circle") or "spread" (those tokens laid out as visual tokens are,
    `navil.quickstart_data.object_words_text`)."""
    with open(path, "w", encoding="utf-8") as f:
        for s in iter_samples(split, n, seed=0, start=start, categories=categories, max_objects=max_objects,
                              questions_per_image=questions, balanced=by_objects):
            caption = s.caption if layout == "words" else _OBJECT.sub(r"\1_\2", s.caption)
            if layout == "spread":
                caption = object_words_text(s, random.Random(s.index))
            conv = []
            for i, (_, question, answer) in enumerate(s.turns):
                prompt = format_question(question)
                first = f"{prompt}\n{caption}" if question_first else f"{caption}\n{prompt}"
                conv += [{"from": "human", "value": first if i == 0 else prompt},
                         {"from": "gpt", "value": answer}]
            category = f"{s.category}@{len(s.meta.get('objects', []))}" if by_objects else s.category
            f.write(json.dumps({"id": f"{split}-{s.index}", "conversations": conv, "category": category}) + "\n")
    return str(path)


def parse_curriculum(text: str) -> list[tuple[float, int]]:
    """ "1:0,2:0.1" -> [(0.0, 1), (0.1, 2)]: from each start fraction, scenes of up to that many objects."""
    stages = sorted((float(f), int(n)) for n, f in (item.split(":") for item in text.split(",")))
    if not stages or stages[0][0] != 0.0:
        raise SystemExit("--curriculum must start at fraction 0, e.g. 1:0,2:0.1")
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--curriculum", default="1:0,2:0.1,3:0.3,5:0.55")
    ap.add_argument("--categories", default="color,shape")
    ap.add_argument("--bound", action="store_true", help="each object one caption token (colour_shape)")
    ap.add_argument("--spread", action="store_true", help="each object 2-4 copies of its one token between "
                    "background tokens, without location words (the layout of visual tokens)")
    ap.add_argument("--question-first", action="store_true", help="the question before the caption")
    ap.add_argument("--questions", type=int, default=4, help="questions per scene (later ones follow the caption)")
    ap.add_argument("--lr", type=float, default=None, help="default: the preset's text-LLM LR")
    ap.add_argument("--llm", default="{}", help='JSON overrides of the preset decoder, e.g. \'{"qk_norm": false}\'')
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="folder for the data and the curve (default: a temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out or tempfile.mkdtemp(prefix="navil_text_retrieval_"))
    out.mkdir(parents=True, exist_ok=True)
    categories = tuple(args.categories.split(","))
    p = Preset()
    p.llm = {**p.llm, **json.loads(args.llm)}
    p.val_points = 5

    layout = "spread" if args.spread else "bound" if args.bound else "words"
    write = partial(write_conversations, layout=layout, question_first=args.question_first)
    tok_dir = write_word_tokenizer(out / "tokenizer", synthetic_vocabulary(0))  # holds the object words
    tok = load_tokenizer(tok_dir, require_navil_tokens=False)
    llm_cfg, vis_cfg = _configs(p, tok.vocab_size + 16)
    model = init_from_llm(None, vis_cfg, llm_config=llm_cfg, tokenizer=tok, seed=0, **_navil_kwargs(p))
    held = write(out / "held.jsonl", "val", 100 * len(categories), 7 * 10**6, categories, 5, 1, by_objects=True)
    schedule = []
    for frac, max_objects in parse_curriculum(args.curriculum):
        train = write(out / f"train_{max_objects}.jsonl", "train", 4000, (10 + max_objects) * 10**6, categories,
                      max_objects, args.questions)
        schedule.append((frac, _loader(train, None, model, model.tokenizer, p, 0, images=False)))
    validator = Validator({"": held}, model, model.tokenizer, p, out / "curve.jsonl")
    train_phase("text decoder", model, "stage2", schedule, args.steps, args.lr or p.lr_text, p, validator=validator,
                log_every_s=60)
    validator(model, "text decoder", args.steps)
    print(f"curve: {out / 'curve.jsonl'}")


if __name__ == "__main__":
    main()
