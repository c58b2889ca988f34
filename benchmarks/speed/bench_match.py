"""Times load_vocab of both sides plus match_vocab: the klue/NSMC case on real
data, against the plain Python way to the same pairs (read klue's vocab.txt
into a dict, call the NSMC tokenizer's get_vocab(), look every token up;
goal: no slower, better half), and synthetic vocabularies from 30k to 256k
with about 30% shared (goal: at most 1 s at 256k x 256k).

Writes results/match.md.
"""

import random
import string
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

import vocabxfer  # noqa: E402

SIZES = [30_000, 64_000, 128_000, 256_000]


def synthetic_wordpiece(size: int, shared: list, seed: int) -> dict:
    """A WordPiece-like {token: id}: specials, then `shared`, then tokens of
    its own (word starts and ## continuations), shuffled."""
    rng = random.Random(seed)
    letters = string.ascii_lowercase + "가나다라마바사아자차카타파하"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(shared)
    seen = set(tokens)
    while len(tokens) < size:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
        token = ("##" + word) if rng.random() < 0.3 else word
        if token not in seen:
            seen.add(token)
            tokens.append(token)
    head, tail = tokens[:5], tokens[5:]
    rng.shuffle(tail)
    return {token: index for index, token in enumerate(head + tail)}


def synthetic_pair(size: int):
    shared = list(synthetic_wordpiece(int(size * 0.3) + 5, [], seed=size))[5:]
    return (synthetic_wordpiece(size, shared, seed=size + 1),
            synthetic_wordpiece(size, shared, seed=size + 2))


def plain_pairs(vocab_txt: Path, tokenizer) -> dict:
    """The pairs the plain way: {target id: source id} of shared tokens."""
    with open(vocab_txt, encoding="utf-8") as handle:
        source = {line.rstrip("\n"): index for index, line in enumerate(handle)}
    target = tokenizer.get_vocab(with_added_tokens=True)
    return {target_id: source[token] for token, target_id in target.items() if token in source}


def klue_against_plain(klue: Path, tokenizer, repeats: int):
    """Median ms of the plain way and of vocabxfer (exact), calls taking
    turns, after checking that both give the same pairs."""
    expected = plain_pairs(klue, tokenizer)
    token_map = vocabxfer.match_vocab(klue, tokenizer)
    got = dict(zip(token_map.target_ids.tolist(), token_map.source_ids.tolist()))
    if got != expected:
        raise SystemExit("vocabxfer and the plain way give different pairs; not timing")
    calls = {"plain": lambda: plain_pairs(klue, tokenizer),
             "vocabxfer": lambda: vocabxfer.match_vocab(klue, tokenizer)}
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            samples[name] += common.time_call(call, repeats=1, warmup=0)
    return {name: common.median(values) for name, values in samples.items()}, len(expected)


def time_match(source, target, mode, repeats):
    seconds = common.time_call(lambda: vocabxfer.match_vocab(source, target, mode=mode),
                               repeats=repeats, warmup=1)
    return common.median(seconds)


def main(argv=None):
    parser = common.argument_parser(__doc__, data=True)
    parser.add_argument("--quick", action="store_true", help="sizes up to 64k, fewer repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    rows = []

    if (args.data / "nsmc").is_dir():
        documents = common.nsmc_documents(args.data)
        if args.quick:
            documents = documents[:30000]
        tokenizer = common.train_reference_tokenizer(documents)
        klue = args.data / "vocab" / "klue-bert-base-vocab.txt"
        scratch = tempfile.TemporaryDirectory()
        tokenizer_json = Path(scratch.name) / "tokenizer.json"
        tokenizer.save(str(tokenizer_json))
        seconds, shared = klue_against_plain(klue, tokenizer, repeats * 10)
        rows.append(["klue vocab.txt <- NSMC tokenizers object: the plain way (dict from the "
                     "file, get_vocab(), lookups)", "exact", f"{seconds['plain'] * 1e3:.1f}"])
        rows.append(["klue vocab.txt <- NSMC tokenizers object: vocabxfer load_vocab x2 + "
                     f"match_vocab ({shared:,} pairs, same as the plain way)", "exact",
                     f"{seconds['vocabxfer'] * 1e3:.1f} "
                     f"({seconds['vocabxfer'] / seconds['plain']:.2f}x the plain way)"])
        print("  ".join(rows[-2]))
        print("  ".join(rows[-1]))
        for target_name, target in (("tokenizers object", tokenizer),
                                    ("tokenizer.json file", tokenizer_json)):
            for mode in ("exact", "canonical"):
                seconds = time_match(klue, target, mode, repeats * 3)
                rows.append([f"klue vocab.txt (32,000) <- NSMC {target_name} (30,000)", mode,
                             f"{seconds * 1e3:.1f}"])
                print("  ".join(rows[-1]))
        scratch.cleanup()
    else:
        print(f"no real data at {args.data}: the klue case is skipped")

    for size in SIZES[:2] if args.quick else SIZES:
        source, target = synthetic_pair(size)
        for mode in ("exact", "canonical"):
            seconds = time_match(source, target, mode, repeats)
            rows.append([f"synthetic {size:,} <- {size:,} ({{token: id}} dicts)", mode,
                         f"{seconds * 1e3:.1f}"])
            print("  ".join(rows[-1]))

    body = ("Each time covers load_vocab of both sides and match_vocab with its report "
            f"(median of {repeats}+ calls; the klue rows {repeats * 3}, the plain-way "
            f"comparison {repeats * 10} calls each, taking turns).\n\n"
            + common.markdown_table(["case", "mode", "ms"], rows))
    path = common.write_result("match.md", "load_vocab + match_vocab", body, out_dir=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
