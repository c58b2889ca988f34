"""Times the workflow's steps beyond matching: fvt over a 30,000-token target
vocabulary (goal: at most 0.5 s), segment_mean_ against a pure-torch
equivalent on the same segments, and transfer_model on a BERT-base-sized
masked LM built locally (goal: at most 2 s beyond building it).

Source: the klue/bert-base vocabulary; target: WordPiece trained on NSMC
(real data from ../shared/data). Writes results/workflow.md.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

import vocabxfer  # noqa: E402


def main(argv=None):
    parser = common.argument_parser(__doc__, data=True)
    parser.add_argument("--quick", action="store_true",
                        help="train the target on 30,000 reviews; fewer repeats")
    args = parser.parse_args(argv)
    data = common.require_data(args.data)
    repeats = 3 if args.quick else 7

    documents = common.nsmc_documents(data)
    if args.quick:
        documents = documents[:30000]
    target = common.train_reference_tokenizer(documents)
    source = vocabxfer.load_vocab(data / "vocab" / "klue-bert-base-vocab.txt")
    token_map = vocabxfer.match_vocab(source, target)
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(len(source), 768, generator=generator)
    rows = []

    plan = vocabxfer.plan_initialisation(token_map, init="fvt")
    seconds = common.median(common.time_call(
        lambda: vocabxfer.plan_initialisation(token_map, init="fvt"), repeats=repeats, warmup=1))
    rows.append(["fvt plan: split every unmatched token with the source tokenizer",
                 f"{plan.counts['fvt']:,} tokens", f"{seconds * 1e3:.0f}"])
    total = seconds
    seconds = common.median(common.time_call(
        lambda: vocabxfer.transfer_embeddings(embeddings, token_map, init="fvt"),
        repeats=repeats, warmup=1))
    rows.append(["transfer_embeddings(init='fvt'), plan + fill, 768 float32",
                 f"{len(token_map.target):,} rows", f"{seconds * 1e3:.0f}"])

    segments = plan.segments
    target_ids, source_ids, offsets = segments.target_ids, segments.source_ids, segments.offsets
    matrix = torch.empty(len(token_map.target), 768)
    compiled = lambda: vocabxfer.segment_mean_(matrix, target_ids, embeddings,  # noqa: E731
                                               source_ids, offsets)
    segment_of_piece = torch.repeat_interleave(torch.arange(len(target_ids)), offsets.diff())
    counts = offsets.diff().to(torch.float32)[:, None]

    def reference():
        # The same means in plain torch, without the op's checks.
        sums = torch.zeros(len(target_ids), embeddings.shape[1])
        sums.index_add_(0, segment_of_piece, embeddings.index_select(0, source_ids))
        matrix.index_copy_(0, target_ids, sums / counts)
    check = matrix.clone()
    compiled()
    check.copy_(matrix)
    reference()
    torch.testing.assert_close(matrix, check)
    op_seconds = common.median(common.time_call(compiled, repeats=repeats * 3))
    torch_seconds = common.median(common.time_call(reference, repeats=repeats * 3))
    pieces = f"{len(segments):,} segments, {segments.source_ids.numel():,} pieces"
    rows.append(["segment_mean_ (compiled)", pieces, f"{op_seconds * 1e3:.1f}"])
    rows.append(["plain torch: index_select + index_add_ + divide + index_copy_", pieces,
                 f"{torch_seconds * 1e3:.1f} ({torch_seconds / op_seconds:.1f}x the op)"])

    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(source))).eval()
    result = vocabxfer.transfer_model(model, source, target, init="fvt")
    transfer_seconds = sum(result.seconds.values())
    rows.append(["transfer_model, BERT-base masked LM (110M parameters, tied decoder + bias)",
                 f"{len(source):,} -> {len(token_map.target):,}",
                 f"{transfer_seconds * 1e3:.0f} (" + ", ".join(
                     f"{k} {v * 1e3:.0f}" for k, v in result.seconds.items()) + ")"])
    for row in rows:
        print("  ".join(row))
    body = (f"Source klue/bert-base vocab.txt, target WordPiece trained on {len(documents):,} NSMC "
            f"reviews; {token_map.report.matched:,} matched. Medians of {repeats}+ runs "
            "(transfer_model: one run, it changes the model).\n\n"
            + common.markdown_table(["step", "size", "ms"], rows))
    path = common.write_result("workflow.md", "fvt, segment_mean_ and transfer_model", body,
                               out_dir=args.out)
    print(f"wrote {path}")
    return total


if __name__ == "__main__":
    main()
