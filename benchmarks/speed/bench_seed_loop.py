"""The common recipe reproduced on real data, against faster ways to the same
matrix.

Source: the klue/bert-base vocabulary loaded as a transformers
BertTokenizerFast, with a 32,000 x 768 float32 matrix (random, fixed seed:
values do not change the speed). Target: a 30,000-token WordPiece tokenizer
trained on the NSMC reviews, and a fresh nn.Embedding (N(0,1)) to fill.

Variants, verified to give identical matrices before anything is timed:
  1. the naive loop as people write it: tqdm over the target vocabulary,
     `token in pretrained_tokenizer.vocab`, convert_tokens_to_ids, one row
     assignment per token under no_grad. It takes minutes, so a prefix is
     timed and the whole extrapolated (--full runs it all);
  2. the same loop with the vocabulary dict read once;
  3. vectorised torch: pairs from the dict, then weight[t] = source[s];
  4. index_copy_ with index_select on the same pairs;
  5. vocabxfer end to end: load_vocab + match_vocab + transfer_rows_.
Peak memory: each variant runs again in a fresh process, and how far it
raises the peak resident memory above where it started is reported (Linux).

Writes results/seed_loop.md and seed_loop.png.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

import vocabxfer  # noqa: E402

WIDTH = 768
NAIVE = "1. naive loop (.vocab per token)"
DICT_ONCE = "2. loop, vocab dict read once"
VECTORISED = "3. vectorised torch weight[t] = source[s]"
INDEX_COPY = "4. index_copy_(index_select)"
VOCABXFER = "5. vocabxfer load_vocab + match_vocab + transfer_rows_"


def setup(folder: Path):
    """Tokenizers and matrices, as the recipe has them."""
    from tokenizers import Tokenizer
    from transformers import BertTokenizerFast

    pretrained_tokenizer = BertTokenizerFast.from_pretrained(str(folder / "klue"),
                                                             do_lower_case=False)
    new_tokenizer = Tokenizer.from_file(str(folder / "nsmc" / "tokenizer.json"))
    torch.manual_seed(0)
    source = torch.randn(len(pretrained_tokenizer), WIDTH)
    embedding = torch.nn.Embedding(new_tokenizer.get_vocab_size(), WIDTH)
    return pretrained_tokenizer, new_tokenizer, source, embedding


def naive_loop(pretrained_tokenizer, new_tokenizer, source, embedding, limit=None):
    from tqdm import tqdm

    items = sorted(new_tokenizer.get_vocab().items(), key=lambda item: item[1])[:limit]
    with torch.no_grad():
        for token, new_id in tqdm(items, desc="naive loop", leave=False, mininterval=1):
            if token in pretrained_tokenizer.vocab:
                old_id = pretrained_tokenizer.convert_tokens_to_ids(token)
                embedding.weight[new_id] = source[old_id]


def dict_once_loop(pretrained_tokenizer, new_tokenizer, source, embedding):
    vocab = pretrained_tokenizer.vocab
    with torch.no_grad():
        for token, new_id in new_tokenizer.get_vocab().items():
            old_id = vocab.get(token)
            if old_id is not None:
                embedding.weight[new_id] = source[old_id]


def pairs(pretrained_tokenizer, new_tokenizer):
    vocab = pretrained_tokenizer.get_vocab()
    found = [(new_id, vocab[token]) for token, new_id in new_tokenizer.get_vocab().items()
             if token in vocab]
    target_ids, source_ids = zip(*sorted(found))
    return torch.tensor(target_ids), torch.tensor(source_ids)


def vectorised(pretrained_tokenizer, new_tokenizer, source, embedding):
    target_ids, source_ids = pairs(pretrained_tokenizer, new_tokenizer)
    with torch.no_grad():
        embedding.weight[target_ids] = source[source_ids]


def index_copy(pretrained_tokenizer, new_tokenizer, source, embedding):
    target_ids, source_ids = pairs(pretrained_tokenizer, new_tokenizer)
    with torch.no_grad():
        embedding.weight.index_copy_(0, target_ids, source.index_select(0, source_ids))


def with_vocabxfer(pretrained_tokenizer, new_tokenizer, source, embedding):
    token_map = vocabxfer.match_vocab(pretrained_tokenizer, new_tokenizer)
    vocabxfer.transfer_rows_(embedding.weight, token_map.target_ids, source, token_map.source_ids)


RUNS = {DICT_ONCE: dict_once_loop, VECTORISED: vectorised, INDEX_COPY: index_copy,
        VOCABXFER: with_vocabxfer}


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_mb(folder: Path, variant: str, limit: int) -> float:
    """How far a variant raises the resident memory above where it started,
    measured in a fresh process."""
    result = subprocess.run([sys.executable, __file__, "--child", str(folder), variant,
                             str(limit)], capture_output=True, text=True, check=True)
    before, peak = json.loads(result.stdout.strip().splitlines()[-1])
    return (peak - before) / 1024


def child(folder: str, variant: str, limit: str) -> None:
    state = setup(Path(folder))
    # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current
    # resident size, so the peak read afterwards is this variant's alone.
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    if variant == NAIVE:
        naive_loop(*state, limit=int(limit))
    else:
        RUNS[variant](*state)
    print(json.dumps([before, status_kib("VmHWM")]))


def plot(rows, path, prefix, extrapolated):
    plt = common.pyplot()
    labels = [row[0] for row in rows]
    seconds = [row[1] for row in rows]
    figure, axis = plt.subplots(figsize=(10, 3.6))
    colours = ["#d98c8c" if label == NAIVE else "#8cb3d9" for label in labels]
    colours[-1] = "#1f4e99"
    bars = axis.barh(labels, seconds, color=colours)
    if extrapolated:
        bars[0].set_hatch("//")
    axis.set_xscale("log")
    axis.invert_yaxis()
    axis.set_xlabel("seconds (log scale)")
    for bar, value in zip(bars, seconds):
        text = f"{value:.3g} s" if value >= 0.01 else f"{value * 1e3:.2g} ms"
        axis.text(value * 1.15, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=9)
    note = (f"\nhatched: extrapolated from the first {prefix} tokens" if extrapolated else "")
    axis.set_title("Copying the shared rows of a 30,000-token NSMC vocabulary from "
                   "klue/bert-base" + note, fontsize=10)
    common.save_figure(figure, path)


def main(argv=None):
    parser = common.argument_parser(__doc__, data=True)
    parser.add_argument("--prefix", type=int, default=500,
                        help="target tokens the naive loop runs before extrapolating (500)")
    parser.add_argument("--full", action="store_true",
                        help="run the naive loop over the whole vocabulary (minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="100-token prefix, fewer repeats, no memory measurement")
    args = parser.parse_args(argv)
    data = common.require_data(args.data)
    prefix = 100 if args.quick else args.prefix
    repeats = 3 if args.quick else 7

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "klue").mkdir()
        (folder / "klue" / "vocab.txt").write_bytes(
            (data / "vocab" / "klue-bert-base-vocab.txt").read_bytes())
        (folder / "nsmc").mkdir()
        common.train_reference_tokenizer(common.nsmc_documents(data)).save(
            str(folder / "nsmc" / "tokenizer.json"))
        pretrained_tokenizer, new_tokenizer, source, embedding = setup(folder)
        size = new_tokenizer.get_vocab_size()
        start_weight = embedding.weight.detach().clone()

        def fresh():
            with torch.no_grad():
                embedding.weight.copy_(start_weight)

        # Correctness first: every variant gives the same matrix.
        results = {}
        for name, run in RUNS.items():
            fresh()
            run(pretrained_tokenizer, new_tokenizer, source, embedding)
            results[name] = embedding.weight.detach().clone()
        reference = results[DICT_ONCE]
        for name, weight in results.items():
            if not torch.equal(weight, reference):
                raise SystemExit(f"{name} gave a different matrix; not timing")
        changed = (reference != start_weight).any(1).sum().item()
        fresh()
        naive_limit = None if args.full else prefix
        naive_loop(pretrained_tokenizer, new_tokenizer, source, embedding, limit=naive_limit)
        covered = size if args.full else prefix
        if not torch.equal(embedding.weight[:covered], reference[:covered]):
            raise SystemExit("the naive loop gave a different matrix; not timing")
        print(f"verified: all variants copy the same {changed:,} rows of {size:,}")

        timings = {}
        fresh()
        started = time.perf_counter()
        naive_loop(pretrained_tokenizer, new_tokenizer, source, embedding, limit=naive_limit)
        timings[NAIVE] = (time.perf_counter() - started) * size / covered
        for name, run in RUNS.items():
            timings[name] = common.median(common.time_call(
                lambda: run(pretrained_tokenizer, new_tokenizer, source, embedding),
                repeats=repeats, warmup=1, reset=fresh))

        memory = {}
        if not args.quick:
            for name in [NAIVE] + list(RUNS):
                memory[name] = peak_memory_mb(folder, name, prefix)

    rows = [(name, seconds) for name, seconds in timings.items()]
    table = []
    for name, seconds in rows:
        label = name + (f" (extrapolated from {prefix} tokens)" if name == NAIVE and
                        not args.full else "")
        table.append([label, f"{seconds * 1e3:,.1f}", f"{timings[NAIVE] / seconds:,.0f}x",
                      f"{timings[VECTORISED] / seconds:.3g}x",
                      f"{memory[name]:.0f}" if name in memory else "-"])
        print("  ".join(table[-1]))
    out_dir = args.out or common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, out_dir / "seed_loop.png", prefix, not args.full)
    body = (f"klue/bert-base vocabulary (32,000) -> WordPiece trained on NSMC ({size:,}); "
            f"{changed:,} shared rows of {WIDTH} float32 copied. Medians of {repeats} runs; the "
            "naive loop runs once. Peak memory: how far the variant raises a fresh process's "
            "peak resident memory above its start (the naive loop: over its prefix).\n\n"
            + common.markdown_table(["variant", "ms", "speed-up vs 1", "vs 3",
                                     "peak memory growth (MB)"], table)
            + "\n\n![seed loop](seed_loop.png)")
    path = common.write_result("seed_loop.md", "The common recipe against vocabxfer", body,
                               out_dir=out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
