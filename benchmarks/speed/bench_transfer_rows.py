"""Times transfer_rows_ against the torch ways of doing the same copy, and
against a plain copy of the same bytes (the ceiling: a contiguous copy_ of
the moved rows, converting when the dtypes differ), on CPU or GPU.

Every method is checked to give the same target before anything is timed.
On a GPU it also counts what one call costs the host (kernel launches,
memsets, copies, synchronisations) for transfer_rows_ and segment_mean_.
Writes transfer_rows_<device>.md and .json to results/ beside it (or --out).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

import vocabxfer  # noqa: E402

# name: (target rows, source rows, width, pairs, source dtype, target dtype)
CASES = {
    "klue": (30_000, 32_000, 768, 9_084, torch.float32, torch.float32),
    "klue-all-rows": (30_000, 32_000, 768, 30_000, torch.float32, torch.float32),
    "llm": (128_000, 128_000, 4_096, 100_000, torch.bfloat16, torch.bfloat16),
    "llm f32->bf16": (128_000, 128_000, 4_096, 100_000, torch.float32, torch.bfloat16),
    "llm-256k": (256_000, 256_000, 8_192, 200_000, torch.bfloat16, torch.bfloat16),
}
# The 256k x 8,192 case needs 8 GB of matrices: GPUs only.
CPU_CASES = ("klue", "klue-all-rows", "llm", "llm f32->bf16")
QUICK_CASES = {
    "klue": CASES["klue"],
    "llm-small": (32_000, 32_000, 4_096, 25_000, torch.bfloat16, torch.bfloat16),
}
# On a GPU the op reads its indices from the host (the common case: every
# token map holds them there) and, as a second method, from the device.
METHODS = ("vocabxfer.transfer_rows_", "target[ti] = source[si]", "index_copy_(index_select)",
           "copy of same bytes (ceiling)")
OP_DEVICE_INDICES = "vocabxfer.transfer_rows_ (device indices)"
# On a GPU, where the host-index call's time goes: the same call without
# the check of the values (packing and the copy of the ids remain), the op
# with device indices it need not check (its kernel and fixed cost), and
# the copy of the ids alone (8 bytes a pair, pinned, asynchronous).
OP_HOST_UNCHECKED = "vocabxfer.transfer_rows_ (host indices, indices_checked)"
OP_KERNEL = "vocabxfer.transfer_rows_ (device indices, indices_checked)"
IDS_COPY = "copy of the ids to the device (pinned, int32)"


def build_case(target_rows, source_rows, width, pairs, source_dtype, target_dtype, device):
    source = common.random_matrix(source_rows, width, source_dtype, device, seed=1)
    target = common.random_matrix(target_rows, width, target_dtype, device, seed=2)
    target_ids = common.random_ids(pairs, target_rows, device, seed=3)
    source_ids = common.random_ids(pairs, source_rows, device, seed=4)
    return target, target_ids, source, source_ids


def methods(target, target_ids, source, source_ids, ceiling_source, ceiling_target):
    host_ids = target_ids.cpu(), source_ids.cpu()

    def op():
        vocabxfer.transfer_rows_(target, host_ids[0], source, host_ids[1])

    def op_device_indices():
        vocabxfer.transfer_rows_(target, target_ids, source, source_ids)

    def assign():
        target[target_ids] = source[source_ids].to(target.dtype)

    def index_copy():
        target.index_copy_(0, target_ids, source.index_select(0, source_ids).to(target.dtype))

    def copy_ceiling():
        ceiling_target.copy_(ceiling_source)

    runs = dict(zip(METHODS, (op, assign, index_copy, copy_ceiling)))
    if target.is_cuda:
        runs[OP_DEVICE_INDICES] = op_device_indices
        pinned_ids = torch.cat(host_ids).to(torch.int32).pin_memory()
        runs[OP_HOST_UNCHECKED] = lambda: vocabxfer.transfer_rows_(
            target, host_ids[0], source, host_ids[1], indices_checked=True)
        runs[OP_KERNEL] = lambda: vocabxfer.transfer_rows_(
            target, target_ids, source, source_ids, indices_checked=True)
        runs[IDS_COPY] = lambda: pinned_ids.to(target.device, non_blocking=True)
    return runs


def run_case(name, spec, device, repeats):
    target_rows, source_rows, width, pairs, source_dtype, target_dtype = spec
    target, target_ids, source, source_ids = build_case(*spec, device)
    original = target.clone()
    bytes_moved = pairs * width * (source.element_size() + target.element_size())
    ceiling_source = source[:pairs].clone()
    # Written once up front, so that no method pays for first-touch page faults.
    ceiling_target = torch.zeros(pairs, width, dtype=target_dtype, device=device)
    runs = methods(target, target_ids, source, source_ids, ceiling_source, ceiling_target)

    # Correctness first: every method must give the same matrix.
    expected = original.clone()
    expected[target_ids] = source[source_ids].to(target_dtype)
    for method, function in runs.items():
        if "ceiling" in method or method == IDS_COPY:
            continue
        target.copy_(original)
        function()
        if not torch.equal(target, expected):
            raise SystemExit(f"{name}: {method} gave a different result; not timing")
    del original, expected

    # Methods take turns, round after round, so that drift in the machine's
    # speed touches all of them alike; caches are flushed before every call.
    flush = common.CacheFlusher(device)
    samples = {method: [] for method in runs}
    for _ in range(repeats):
        for method, function in runs.items():
            samples[method] += common.time_call(function, device, repeats=1, warmup=1,
                                                reset=flush)
    timings = {method: common.median(values) for method, values in samples.items()}
    description = (f"{name}: {pairs:,} rows of {width} "
                   f"{str(source_dtype).replace('torch.', '')}"
                   + (f" -> {str(target_dtype).replace('torch.', '')}"
                      if target_dtype != source_dtype else "")
                   + f" from {source_rows:,} into {target_rows:,} "
                   f"({bytes_moved / 1e6:,.1f} MB read + written)")
    return description, bytes_moved, timings


def table_rows(name, bytes_moved, timings):
    ceiling = timings["copy of same bytes (ceiling)"]
    baseline = timings["index_copy_(index_select)"]
    return [[name, method, f"{seconds * 1e6:,.0f}", f"{bytes_moved / seconds / 1e9:.1f}",
             f"{100 * ceiling / seconds:.0f}%", f"{baseline / seconds:.2f}x"]
            for method, seconds in timings.items()]


def host_costs(device):
    """Launches, memsets, copies and synchronisations of one valid call."""
    target, target_ids, source, source_ids = build_case(*CASES["klue"], device)
    segments = 2_000
    offsets = torch.arange(0, 3 * segments + 1, 3, device=device)
    piece_ids = common.random_ids(3 * segments, source.shape[0], device, seed=5)
    # Copied to the host once, here: a copy inside a call would count.
    host = [ids.cpu() for ids in (target_ids, source_ids, piece_ids, offsets)]
    calls = {
        "transfer_rows_ (klue)": lambda: vocabxfer.transfer_rows_(target, host[0], source,
                                                                  host[1]),
        "transfer_rows_ (klue, device indices)": lambda: vocabxfer.transfer_rows_(
            target, target_ids, source, source_ids),
        "segment_mean_ (2,000 segments of 3)": lambda: vocabxfer.segment_mean_(
            target, host[0][:segments], source, host[2], host[3]),
        "segment_mean_ (2,000 segments of 3, device indices)": lambda: vocabxfer.segment_mean_(
            target, target_ids[:segments], source, piece_ids, offsets),
        "index_copy_(index_select) (klue)": lambda: target.index_copy_(
            0, target_ids, source.index_select(0, source_ids)),
    }
    return {name: common.count_cuda_calls(call) for name, call in calls.items()}


def synchronisation_seconds(device, repeats=200):
    """What one synchronisation with an idle GPU costs the host (median):
    the allowance of a device-index call over index_copy_."""
    import time

    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - started)
    return common.median(samples)


def main(argv=None):
    parser = common.argument_parser(__doc__, data=False)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller LLM case and fewer repeats (about 15 s on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per method")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    cases = QUICK_CASES if args.quick else {
        name: spec for name, spec in CASES.items() if on_gpu or name in CPU_CASES}
    repeats = args.repeats or (5 if args.quick else 20)

    descriptions, rows, raw = [], [], {"device": args.device, "cases": {}}
    for name, spec in cases.items():
        description, bytes_moved, timings = run_case(name, spec, args.device, repeats)
        descriptions.append(f"- {description}")
        rows += table_rows(name, bytes_moved, timings)
        raw["cases"][name] = {"bytes": bytes_moved, "seconds": timings}
        print(description)
        for row in rows[-len(timings):]:
            print("  " + "  ".join(row[1:]))
        if on_gpu:
            torch.cuda.empty_cache()
    header = ["case", "method", "µs (median)", "GB/s", "% of copy ceiling", "vs index_copy_"]
    if on_gpu:
        descriptions.append("\nvocabxfer.transfer_rows_ reads its indices from the host (as "
                            "every token map holds them) unless marked; the torch methods "
                            "read them from the device.")
    body = ("\n".join(descriptions) + f"\n\nMedian of {repeats} timed calls per method, "
            "methods taking turns; before every call a 256 MB buffer is written so that "
            "each call starts with cold caches, as a one-shot initialisation does. Each time "
            "runs from the call to the end of the device's work. GB/s counts bytes read plus "
            "bytes written.\n\n" + common.markdown_table(header, rows))
    if on_gpu:
        raw["host_costs"] = host_costs(args.device)
        raw["synchronisation_seconds"] = synchronisation_seconds(args.device)
        body += "\n\n## What one call costs the host\n\n" + common.markdown_table(
            ["call", "kernel launches", "memsets", "copies", "synchronisations"],
            [[name, *(str(count) for count in costs.values())]
             for name, costs in raw["host_costs"].items()])
        print(raw["host_costs"])
    device_name = args.device.split(":")[0]
    path = common.write_result(f"transfer_rows_{device_name}.md",
                               f"transfer_rows_ on {args.device}", body, args.device, args.out)
    common.write_json(f"transfer_rows_{device_name}.json", raw, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
