"""The reference case on real data: a WordPiece tokenizer trained on the NSMC
reviews, matched exactly (and canonically) against the klue/bert-base
vocabulary. The common recipe reports 9,084 shared tokens of 30,000; runs
differ by about ±10 because tokenizer training is not fully deterministic.

Prints both reports and writes them to results/nsmc_reference.md.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

import vocabxfer  # noqa: E402


def main(argv=None):
    parser = common.argument_parser(__doc__, data=True)
    parser.add_argument("--vocab-size", type=int, default=30000)
    parser.add_argument("--with-test", action="store_true",
                        help="train on ratings_train + ratings_test (199,992 reviews)")
    parser.add_argument("--quick", action="store_true",
                        help="train on the first 30,000 reviews only (the count then differs)")
    args = parser.parse_args(argv)
    data = common.require_data(args.data)

    documents = common.nsmc_documents(data, include_test=args.with_test)
    if args.quick:
        documents = documents[:30000]
    started = time.perf_counter()
    tokenizer = common.train_reference_tokenizer(documents, args.vocab_size)
    trained = time.perf_counter() - started
    klue = data / "vocab" / "klue-bert-base-vocab.txt"
    sections = [f"Target: WordPiece trained on {len(documents):,} NSMC reviews in {trained:.1f} s "
                f"(vocab_size={args.vocab_size}, min_frequency=2, lowercase=False, "
                "strip_accents=False). Source: klue/bert-base vocab.txt."]
    for mode in ("exact", "canonical"):
        started = time.perf_counter()
        token_map = vocabxfer.match_vocab(klue, tokenizer, mode=mode)
        seconds = time.perf_counter() - started
        print(token_map.report)
        print(f"({mode}: load_vocab of both + match_vocab took {seconds * 1e3:.1f} ms)\n")
        sections.append(f"```\n{token_map.report}\n```\n{mode}: load_vocab of both + "
                        f"match_vocab took {seconds * 1e3:.1f} ms.")
    path = common.write_result("nsmc_reference.md", "NSMC tokenizer vs klue/bert-base",
                               "\n\n".join(sections), out_dir=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
