"""`navil chat`: ask a checkpoint about images, once or in an interactive multi-turn loop."""
from __future__ import annotations

import argparse
import sys

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="answer a question about images with a NaViL checkpoint",
                       description="Answer QUESTION about the images; without QUESTION, chat interactively.")
    p.add_argument("question", nargs="?", help="the question (omit for an interactive session)")
    p.add_argument("--model", required=True, help="checkpoint folder (official NaViL or navil-trained)")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several images)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--no-multi-scale", action="store_true", help="encode each image at full resolution only")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import navil
    from navil.processing.image import load_image

    images = [load_image(path) for path in args.image]  # fail early on a bad image, before loading weights
    model = navil.load_model(args.model, dtype=getattr(torch, DTYPES[args.dtype]), device=args.device)
    tokenizer = navil.load_tokenizer(args.model)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    options = {"max_new_tokens": args.max_new_tokens, "multi_scale": not args.no_multi_scale,
               "do_sample": args.temperature > 0, "temperature": args.temperature, "top_p": args.top_p,
               "top_k": args.top_k, "generator": generator}

    def ask(question: str, history):
        printed = 0

        def on_text(text: str) -> None:
            nonlocal printed
            print(text[printed:], end="", flush=True)
            printed = len(text)

        answer, history = model.chat(tokenizer, images=images if not history else None, question=question,
                                     history=history, return_history=True,
                                     on_text=on_text if args.stream else None, **options)
        print(answer[printed:] if args.stream else answer, flush=True)
        return history

    if args.question is not None:
        ask(args.question, None)
        return 0
    history: list = []
    print("navil chat - empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            return 0
        if not question:
            return 0
        history = ask(question, history)
