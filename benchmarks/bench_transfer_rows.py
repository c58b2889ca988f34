"""Times transfer_rows_ against the torch ways of doing the same copy, and
against a plain copy of the same bytes (the ceiling), on CPU or GPU.

Every method is checked to give the same target before anything is timed.
Writes a markdown table to benchmarks/results/transfer_rows_<device>.md.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vocabxfer  # noqa: E402

CASES = {
    # name: (target rows, source rows, width, pairs, dtype)
    "klue": (30_000, 32_000, 768, 9_084, torch.float32),
    "llm": (128_000, 128_000, 4_096, 100_000, torch.bfloat16),
}
QUICK_CASES = {
    "klue": CASES["klue"],
    "llm-small": (32_000, 32_000, 4_096, 25_000, torch.bfloat16),
}


def build_case(target_rows, source_rows, width, pairs, dtype, device):
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(source_rows, width, generator=generator).to(dtype).to(device)
    target = torch.randn(target_rows, width, generator=generator).to(dtype).to(device)
    target_ids = torch.randperm(target_rows, generator=generator)[:pairs].to(device)
    source_ids = torch.randperm(source_rows, generator=generator)[:pairs].to(device)
    return target, target_ids, source, source_ids


def methods(target, target_ids, source, source_ids, ceiling_src, ceiling_dst):
    def op():
        vocabxfer.transfer_rows_(target, target_ids, source, source_ids)

    def assign():
        target[target_ids] = source[source_ids]

    def index_copy():
        target.index_copy_(0, target_ids, source.index_select(0, source_ids))

    def copy_ceiling():
        ceiling_dst.copy_(ceiling_src)

    return {"vocabxfer.transfer_rows_": op, "target[ti] = source[si]": assign,
            "index_copy_(index_select)": index_copy, "copy of same bytes (ceiling)": copy_ceiling}


def run_case(name, spec, device, repeats):
    target_rows, source_rows, width, pairs, dtype = spec
    target, target_ids, source, source_ids = build_case(*spec, device)
    original = target.clone()
    bytes_moved = 2 * pairs * width * target.element_size()
    ceiling_src = source[:pairs].clone()
    ceiling_dst = torch.empty_like(ceiling_src)
    runs = methods(target, target_ids, source, source_ids, ceiling_src, ceiling_dst)

    # Correctness first: every method must give the same matrix.
    expected = original.clone()
    expected[target_ids] = source[source_ids]
    for method, function in runs.items():
        if "ceiling" in method:
            continue
        target.copy_(original)
        function()
        if not torch.equal(target, expected):
            raise SystemExit(f"{name}: {method} gave a different result; not timing")

    # Methods take turns, round after round, so that drift in the machine's
    # speed touches all of them alike; caches are flushed before every call.
    flush = common.CacheFlusher(device)
    samples = {method: [] for method in runs}
    for _ in range(repeats):
        for method, function in runs.items():
            samples[method] += common.time_call(function, device, repeats=1, warmup=1,
                                                reset=flush)
    timings = {method: common.median(values) for method, values in samples.items()}
    ceiling = timings["copy of same bytes (ceiling)"]
    baseline = timings["index_copy_(index_select)"]
    rows = []
    for method, seconds in timings.items():
        rows.append([name, method, f"{seconds * 1e6:,.0f}", f"{bytes_moved / seconds / 1e9:.1f}",
                     f"{100 * ceiling / seconds:.0f}%", f"{baseline / seconds:.2f}x"])
    description = (f"{name}: {pairs:,} rows of {width} {str(dtype).replace('torch.', '')} "
                   f"from {source_rows:,} into {target_rows:,} "
                   f"({bytes_moved / 1e6:,.1f} MB read + written)")
    return description, rows


def main(argv=None):
    parser = common.argument_parser(__doc__, data=False)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller LLM case and fewer repeats (about 15 s on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per method")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    cases = QUICK_CASES if args.quick else CASES
    repeats = args.repeats or (5 if args.quick else 20)

    descriptions, table_rows = [], []
    for name, spec in cases.items():
        description, rows = run_case(name, spec, args.device, repeats)
        descriptions.append(f"- {description}")
        table_rows += rows
        print(description)
        for row in rows:
            print("  " + "  ".join(row[1:]))
    header = ["case", "method", "µs (median)", "GB/s", "% of copy ceiling", "vs index_copy_"]
    body = ("\n".join(descriptions) + f"\n\nMedian of {repeats} timed calls per method, "
            "methods taking turns; before every call a 256 MB buffer is written so that "
            "each call starts with cold caches, as a one-shot initialisation does. GB/s "
            "counts bytes read plus bytes written.\n\n" + common.markdown_table(header, table_rows))
    path = common.write_result(f"transfer_rows_{args.device.split(':')[0]}.md",
                               f"transfer_rows_ on {args.device}", body, args.device, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
