"""The vocabxfer command line: it parses, calls one library function per
command and prints the result. Bad input (a VocabxferError, or an OSError
for files) ends in one line and exit status 2; -v shows the traceback too."""

import argparse
import json
import os
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, List, Optional

from vocabxfer.errors import VocabxferError
from vocabxfer.initialisation.fvt import DEFAULT_PIECE_WEIGHTS, PIECE_WEIGHTS
from vocabxfer.initialisation.plan import INITS
from vocabxfer.vocabularies.matching import MODES
from vocabxfer.refinement.objectives import OBJECTIVES
from vocabxfer.training.tokenizer import MODELS

logger = logging.getLogger("vocabxfer")


def add_tokenizer_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab-size", type=int, default=30000,
                        help="target vocabulary size (default: 30000)")
    parser.add_argument("--min-frequency", type=int, default=2,
                        help="least count of a token to enter the vocabulary (default: 2)")
    parser.add_argument("--tokenizer-model", choices=MODELS, default=None,
                        help="kind of tokenizer to train (default: the source tokenizer's "
                             "kind, so an LLM's byte-level BPE trains a byte-level BPE; "
                             "wordpiece without one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vocabxfer",
        description="Move a pretrained transformer to a new vocabulary.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log more, and show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train-tokenizer", help="train a target tokenizer on a corpus")
    train.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                       help="text files, one passage per line")
    train.add_argument("--out", required=True, type=Path, help="folder to write the tokenizer to")
    train.add_argument("--like", help="source tokenizer whose pipeline, casing and special "
                                      "tokens to follow")
    train.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    add_tokenizer_training_options(train)

    match = commands.add_parser("match", help="print the token map report of two tokenizers")
    match.add_argument("source", help="source (pretrained) tokenizer: folder, tokenizer.json, "
                                      "vocab.txt or hub id")
    match.add_argument("target", help="target (new) tokenizer, same forms")
    match.add_argument("--mode", choices=MODES, default="exact")
    match.add_argument("--json", action="store_true", help="print the report as JSON")

    transfer = commands.add_parser(
        "transfer", help="move a model to a new vocabulary and write a ready model folder")
    transfer.add_argument("--model", required=True,
                          help="source model: a local folder (or a hub id where the network "
                               "allows)")
    target = transfer.add_mutually_exclusive_group(required=True)
    target.add_argument("--tokenizer", help="target tokenizer: folder, tokenizer.json or vocab.txt")
    target.add_argument("--corpus", nargs="+", metavar="FILE",
                        help="train the target tokenizer on these files")
    transfer.add_argument("--out", required=True, type=Path, help="folder to write the model to")
    transfer.add_argument("--init", choices=INITS, default="fvt",
                          help="how unmatched tokens start (default: fvt)")
    transfer.add_argument("--match", choices=MODES, default="exact",
                          help="token matching rule (default: exact)")
    transfer.add_argument("--piece-weights", choices=PIECE_WEIGHTS, default=DEFAULT_PIECE_WEIGHTS,
                          help="how fvt weighs a token's pieces (default: "
                               f"{DEFAULT_PIECE_WEIGHTS})")
    transfer.add_argument("--output-piece-weights", choices=PIECE_WEIGHTS, default=None,
                          help="the same for an untied output layer (default: as "
                               "--piece-weights)")
    transfer.add_argument("--refine", action="store_true",
                          help="refine the new embedding rows against the source model for "
                               "the default time budget of the device ("
                               f"{OBJECTIVES['words'].default_seconds['cpu']:.0f} s on a CPU, "
                               f"{OBJECTIVES['words'].default_seconds['accelerator']:.0f} s on "
                               "a GPU for an encoder; "
                               f"{OBJECTIVES['next-token'].default_seconds['cpu']:.0f} s and "
                               f"{OBJECTIVES['next-token'].default_seconds['accelerator']:.0f} s "
                               "for a "
                               "causal language model)")
    transfer.add_argument("--refine-steps", type=int, default=0, metavar="N",
                          help="refine for N steps instead (default: 0)")
    transfer.add_argument("--refine-seconds", type=float, default=None, metavar="S",
                          help="refine for S seconds of wall time (or, with "
                               "--refine-steps, whichever ends first); the learning rate "
                               "decays over the budget")
    add_refinement_choices(transfer)
    transfer.add_argument("--refine-corpus", nargs="+", metavar="FILE",
                          help="text to refine on (default: --corpus)")
    transfer.add_argument("--plot", type=Path, default=None, metavar="PNG",
                          help="write the refinement's loss curve to this PNG")
    transfer.add_argument("--no-fidelity", action="store_true",
                          help="do not hold out passages of the corpus to measure the moved "
                               "model against the source (by default, when the model is "
                               "loaded and text is given, it is measured and the figures go "
                               "to vocabxfer_fidelity.json)")
    transfer.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: where "
                                                         "the model loads, the CPU)")
    transfer.add_argument("--seed", type=int, default=0, help="seed of sampled inits")
    transfer.add_argument("--dist-timeout", type=float, default=300.0, metavar="S",
                          help="under torchrun: how long a rank waits for the others in a "
                               "collective before the job fails with one error (default: "
                               "300)")
    transfer.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    transfer.add_argument("--link", action="store_true",
                          help="hard-link the weight files that do not change instead of "
                               "copying them (a local safetensors checkpoint; same file "
                               "system). Linked files are the source's own: editing one in "
                               "the output in place changes the source checkpoint too")
    add_tokenizer_training_options(transfer)

    extend_tok = commands.add_parser(
        "extend-tokenizer", help="add the corpus's tokens to a tokenizer, keeping every token "
                                 "it has (ids 0..V-1 unchanged)")
    extend_tok.add_argument("--tokenizer", required=True,
                            help="the tokenizer to extend: folder, tokenizer.json or a model "
                                 "folder")
    extend_tok.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                            help="text files, one passage per line")
    extend_tok.add_argument("--add", type=int, required=True, metavar="N",
                            help="how many tokens to learn, at most")
    extend_tok.add_argument("--min-frequency", type=int, default=2,
                            help="least count of a new token (default: 2)")
    extend_tok.add_argument("--out", required=True, type=Path,
                            help="folder to write the extended tokenizer to")
    extend_tok.add_argument("--force", action="store_true", help="replace a non-empty --out")

    extend = commands.add_parser(
        "extend", help="extend a model's vocabulary with the corpus's tokens and write a ready "
                       "model folder (old rows kept bit for bit, new rows from FVT)")
    extend.add_argument("--model", required=True, help="source model: a local folder")
    extend.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                        help="the domain's text: new tokens are learned on it (and refinement "
                             "reads it)")
    extend.add_argument("--add", type=int, required=True, metavar="N",
                        help="how many tokens to learn, at most")
    extend.add_argument("--out", required=True, type=Path, help="folder to write the model to")
    extend.add_argument("--refine", action="store_true",
                        help="refine the new rows for the default time budget of the device")
    extend.add_argument("--refine-steps", type=int, default=0, metavar="N",
                        help="refine for N steps instead")
    extend.add_argument("--refine-seconds", type=float, default=None, metavar="S",
                        help="refine for S seconds of wall time")
    add_refinement_choices(extend)
    extend.add_argument("--plot", type=Path, default=None, metavar="PNG",
                        help="write the refinement's loss curve to this PNG")
    extend.add_argument("--other-text", nargs="+", default=None, metavar="FILE",
                        help="text of another domain to keep as it is read: no new token is "
                             "one it would use, refinement of a causal LM reads it, and "
                             "fidelity measures held-out passages of it (default: the Python "
                             "documentation the demo reads)")
    extend.add_argument("--no-fidelity", action="store_true",
                        help="do not measure the moved model on held-out passages")
    extend.add_argument("--min-frequency", type=int, default=2,
                        help="least count of a new token (default: 2)")
    extend.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    extend.add_argument("--seed", type=int, default=0, help="seed of the held-out passages and "
                                                           "of refinement's draws")
    extend.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    extend.add_argument("--link", action="store_true",
                        help="hard-link the weight files that do not change (streamed)")

    demo = commands.add_parser(
        "demo", help="the main job on its embedded default: the real all-MiniLM-L6-v2 moved "
                     "to a tokenizer trained on Python's own documentation")
    demo.add_argument("--out", type=Path, default=None,
                      help="folder to write the model to (default: out/minilm-python-docs)")
    demo.add_argument("--vocab-size", type=int, default=8000,
                      help="target vocabulary size (default: 8000)")
    demo.add_argument("--refine-seconds", type=float, default=60.0, metavar="S",
                      help="refine for S seconds and report fidelity on held-out passages "
                           "(default: 60; 0: transfer only, streamed)")

    commands.add_parser("doctor", help="check the install: compiled ops, C++ runtime, "
                                       "bit-exact rows on every device, clean errors, CUDA "
                                       "architectures")
    return parser


def command_train_tokenizer(args) -> int:
    from vocabxfer.cli.jobs import train_tokenizer_to_folder

    print(train_tokenizer_to_folder(args.corpus, args.out, vocab_size=args.vocab_size,
                                    min_frequency=args.min_frequency,
                                    model=args.tokenizer_model, like=args.like,
                                    overwrite=args.force))
    return 0


def command_match(args) -> int:
    from vocabxfer.vocabularies.matching import match_vocab

    report = match_vocab(args.source, args.target, mode=args.mode).report
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if args.json else report)
    return 0


def command_transfer(args) -> int:
    import torch

    from vocabxfer.cli.jobs import transfer_to_folder
    from vocabxfer.initialisation.options import InitOptions
    from vocabxfer.models.devices import resolve_device
    from vocabxfer.refinement import distributed
    from vocabxfer.training.tokenizer import TokenizerTraining

    refinement = refinement_from(args)
    refining = refinement is not None
    if distributed.launched_by_torchrun() and not refining:
        raise VocabxferError(
            f"this transfer was launched on {os.environ.get('WORLD_SIZE')} processes (torchrun), "
            "but only refinement runs on several; without --refine, --refine-steps or "
            "--refine-seconds every process would write the same folder. Run it as one "
            "process, or ask for refinement")
    if refining:
        # Under torchrun --nproc-per-node N: refine on N ranks, rank 0 writes.
        distributed.join_launched_job(resolve_device(args.device) or torch.device("cpu"),
                                      args.dist_timeout)
    initialisation = InitOptions(init=args.init, match=args.match,
                                 piece_weights=args.piece_weights,
                                 output_piece_weights=args.output_piece_weights, seed=args.seed)
    training = TokenizerTraining(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                 model=args.tokenizer_model)
    result = transfer_to_folder(args.model, args.out, tokenizer=args.tokenizer,
                                corpus=args.corpus, initialisation=initialisation,
                                refinement=refinement, refine_corpus=args.refine_corpus,
                                training=training, device=args.device, overwrite=args.force,
                                link=args.link, fidelity=not args.no_fidelity)
    if distributed.current().writes:  # the other ranks wrote nothing to report
        print(result)
    return 0


def add_refinement_choices(parser: argparse.ArgumentParser) -> None:
    """The refinement flags that choose how it learns, for transfer and extend."""
    from vocabxfer.refinement.loop import CHECK_SHARE
    from vocabxfer.refinement.objectives import OBJECTIVE_NAMES

    parser.add_argument("--objective", choices=OBJECTIVE_NAMES, default="auto",
                        help="what refinement minimises (default: auto, next-token for a "
                             "causal LM; for an encoder halves, search between passage "
                             "halves, or words where the passages are too short to cut; see "
                             "docs/reference.md)")
    parser.add_argument("--refine-checks", type=int, default=4, metavar="N",
                        help="take the job measure on validation passages set aside from the "
                             "corpus at the start, every 1/N of the run and at its end "
                             f"(fewer when they would take over {CHECK_SHARE:.0%}% of a time "
                             "budget), and "
                             "keep the best rows seen, the start included (default 4; 0: "
                             "keep the last rows)")


def refinement_from(args) -> Optional[Any]:
    """The RefineSettings the refinement flags ask for, or None; --plot
    without them is an error."""
    from vocabxfer.refinement.settings import RefineSettings

    if not (args.refine or args.refine_steps or args.refine_seconds is not None):
        if args.plot is not None:
            raise VocabxferError("--plot is given but no refinement is asked for; pass "
                                 "--refine, --refine-steps N or --refine-seconds S too, or "
                                 "leave it out")
        return None
    return RefineSettings(steps=args.refine_steps or None, seconds=args.refine_seconds,
                          seed=args.seed, plot=args.plot, objective=args.objective,
                          checks=args.refine_checks)


def command_extend_tokenizer(args) -> int:
    from vocabxfer.checkpoints.atomic import check_output_folder
    from vocabxfer.checkpoints.saving import save_tokenizer
    from vocabxfer.training.extension import check_add, extend_tokenizer

    check_add(args.add)
    out = check_output_folder(args.out, args.force)
    extension = extend_tokenizer(args.tokenizer, args.corpus, args.add,
                                 min_frequency=args.min_frequency)
    path = save_tokenizer(extension.tokenizer, out, overwrite=args.force)
    print(f"{extension}\nwrote {path}")
    return 0


def command_extend(args) -> int:
    from vocabxfer.cli.jobs import extend_to_folder
    from vocabxfer.initialisation.options import InitOptions

    print(extend_to_folder(args.model, args.out, args.corpus, args.add,
                           initialisation=InitOptions(seed=args.seed),
                           refinement=refinement_from(args),
                           min_frequency=args.min_frequency, other_domain=args.other_text,
                           device=args.device, overwrite=args.force, link=args.link,
                           fidelity=not args.no_fidelity))
    return 0


def command_demo(args) -> int:
    from vocabxfer.cli import demo

    print(demo.run_demo(args.out or demo.OUT_DIR, args.vocab_size,
                        refine_seconds=args.refine_seconds))
    return 0


def command_doctor(args) -> int:
    from vocabxfer.ops.doctor import doctor

    report = doctor()
    print(report)
    return 0 if report.ok else 1


COMMANDS = {"train-tokenizer": command_train_tokenizer, "match": command_match,
            "extend-tokenizer": command_extend_tokenizer, "extend": command_extend,
            "transfer": command_transfer, "demo": command_demo, "doctor": command_doctor}


def leave_job_at_once(code: int) -> None:
    """In a distributed job that failed, exit now: the process group's
    threads may still wait on a peer, and at interpreter teardown they
    abort the process (SIGABRT) after the one error line was printed."""
    if "torch" not in sys.modules:
        return
    from vocabxfer.refinement import distributed

    if distributed.in_a_job():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (VocabxferError, OSError) as error:
        # Bad input, or a file that is missing or in the way: one line, no
        # traceback (unless -v), nothing written. Anything else is a bug and
        # shows its traceback.
        if args.verbose:
            traceback.print_exc()
        print(f"vocabxfer: error: {error}", file=sys.stderr)
        leave_job_at_once(2)
        return 2


if __name__ == "__main__":
    sys.exit(main())
