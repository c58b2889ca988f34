"""Which row-copy kernel moves the most bytes: a GPU-only tuning harness for
transfer_rows_'s kernels (issue 19), run by benchmarks/gpu.sh.

Compiles the variants in kernel_sweep.cu (unroll 1/2/4/8, the next pair's ids
prefetched or not, evict-first loads and stores or not; 128/256/512 threads
a block; a grid of 4 waves of resident blocks with a grid-stride loop, or
one block per group of rows) and times each against the copy ceiling (a
contiguous copy_ of the same bytes) and against the library's own op, with
CUDA events, caches flushed before every call, in one run. Cases: the
bench_transfer_rows cases and every bench_scaling case that moves 100 MB
or more. Every variant's result is checked against torch's before it is
timed. Also profiles the klue case's call with host indices (the copy of
the ids, the kernel, the gaps between).

Writes kernel_sweep.md and .json to --out; prints the ranking last.
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402  (first: it puts speed/ on the path)
import bench_scaling  # noqa: E402
import bench_transfer_rows  # noqa: E402

import vocabxfer  # noqa: E402

UNROLLS = (1, 2, 4, 8)
# The library's kernel before this sweep: unroll 4, no prefetch, plain
# loads, 256 threads, 4 waves. Since 2026-11-28 it launches one block per
# group of rows, unroll 4 below 6 KiB rows and when converting, unroll 1
# above; "library kernel" times that build itself (device ids it need not
# check), on the same clock as the variants.
PREVIOUS_KERNEL = (2 * 4, 256, 4)
LIBRARY_KERNEL = "library kernel (device ids, indices_checked)"
BIG = 100e6


def variant_name(variant: int, threads: int, waves: int) -> str:
    unroll = UNROLLS[variant // 4]
    prefetch = "prefetch" if variant & 2 else "no-prefetch"
    streaming = "evict-first" if variant & 1 else "plain"
    grid = f"{waves} waves" if waves else "all blocks"
    return f"unroll {unroll}, {prefetch}, {streaming}, {threads} thr, {grid}"


def configurations():
    configs = [(variant, 256, waves) for variant in range(16) for waves in (4, 0)]
    configs += [(variant, threads, waves) for variant in (8, 10, 14) for threads in (128, 512)
                for waves in (4, 0)]
    return configs


def compile_variants():
    from torch.utils.cpp_extension import load_inline

    started = time.perf_counter()
    source = (Path(__file__).resolve().parent / "kernel_sweep.cu").read_text()
    declarations = ("void copy_rows(at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t, "
                    "int64_t, int64_t);\nvoid convert_rows(at::Tensor, at::Tensor, at::Tensor, "
                    "at::Tensor, int64_t, int64_t, int64_t);\n")
    module = load_inline("vocabxfer_kernel_sweep", cpp_sources=declarations,
                         cuda_sources=source, functions=["copy_rows", "convert_rows"],
                         extra_cuda_cflags=["-O3", "-gencode=arch=compute_90,code=sm_90"],
                         verbose=False)
    print(f"compiled the variants in {time.perf_counter() - started:.0f} s", flush=True)
    return module


def event_times(call, flush, repeats):
    """Milliseconds of each call on the device's clock, caches flushed before."""
    times = []
    for _ in range(repeats + 1):
        flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times[1:]


def cases():
    """(name, target rows, source rows, width, pairs, source dtype, target dtype)."""
    found = [(name, *shape) for name, shape in bench_transfer_rows.CASES.items()]
    for source_dtype, target_dtype in bench_scaling.DTYPES:
        for rows in bench_scaling.VOCABS:
            for width in bench_scaling.WIDTHS:
                pairs = int(rows * bench_scaling.MATCHED)
                element = max(source_dtype.itemsize, target_dtype.itemsize)
                moved = pairs * width * (source_dtype.itemsize + target_dtype.itemsize)
                if moved >= BIG and rows * width * element <= 8e9:
                    label = bench_scaling.dtype_label((source_dtype, target_dtype))
                    found.append((f"{rows // 1000}k x {width} {label}", rows, rows, width, pairs,
                                  source_dtype, target_dtype))
    return found


def run_case(module, case, flush, repeats):
    name, target_rows, source_rows, width, pairs, source_dtype, target_dtype = case
    target, target_ids, source, source_ids = bench_transfer_rows.build_case(
        target_rows, source_rows, width, pairs, source_dtype, target_dtype, "cuda")
    host_ids = target_ids.cpu(), source_ids.cpu()
    expected = source[source_ids].to(target_dtype)
    converting = source_dtype != target_dtype
    kernel = module.convert_rows if converting else module.copy_rows
    ceiling_source = source[:pairs].clone()
    ceiling_target = torch.empty(pairs, width, dtype=target_dtype, device="cuda")
    calls = {
        "copy ceiling": lambda: ceiling_target.copy_(ceiling_source),
        "index_copy_": lambda: target.index_copy_(
            0, target_ids, source.index_select(0, source_ids).to(target_dtype)),
        "library op, host ids": lambda: vocabxfer.transfer_rows_(target, host_ids[0], source,
                                                                 host_ids[1]),
        "library op, device ids": lambda: vocabxfer.transfer_rows_(target, target_ids, source,
                                                                   source_ids),
        LIBRARY_KERNEL: lambda: vocabxfer.transfer_rows_(target, target_ids, source, source_ids,
                                                         indices_checked=True),
    }
    for config in configurations():
        calls[config] = (lambda c=config: kernel(target, target_ids, source, source_ids, *c))
    result = {}
    for key, call in calls.items():
        if key != "copy ceiling":
            target.fill_(float("nan"))
            call()
            if not torch.equal(target[target_ids], expected):
                raise SystemExit(f"{case[0]}: {key} wrote wrong rows")
        result[key] = statistics.median(event_times(call, flush, repeats))
    moved = pairs * width * (source_dtype.itemsize + target_dtype.itemsize)
    return {"case": name, "bytes": moved, "ms": result}


def profile_klue(flush):
    """Where the klue call with host ids spends its time on the device."""
    from torch.profiler import ProfilerActivity, profile

    target, target_ids, source, source_ids = bench_transfer_rows.build_case(
        *bench_transfer_rows.CASES["klue"], "cuda")
    host_ids = target_ids.cpu(), source_ids.cpu()
    for _ in range(3):
        vocabxfer.transfer_rows_(target, host_ids[0], source, host_ids[1])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        for _ in range(20):
            flush()
            torch.cuda.synchronize()
            vocabxfer.transfer_rows_(target, host_ids[0], source, host_ids[1])
            torch.cuda.synchronize()
    return profiler.key_averages().table(sort_by="self_cuda_time_total", row_limit=12)


def percent(row, key):
    return 100 * row["ms"]["copy ceiling"] / row["ms"][key]


def main():
    parser = common.argument_parser(__doc__, data=False)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("kernel_sweep needs a CUDA device")
    module = compile_variants()
    flush = common.CacheFlusher("cuda")
    rows = []
    for case in cases():
        rows.append(run_case(module, case, flush, args.repeats))
        torch.cuda.empty_cache()  # the case's matrices are gone with run_case's frame
        best = max(configurations(), key=lambda c: percent(rows[-1], c))
        print(f"{rows[-1]['case']}: ceiling {rows[-1]['ms']['copy ceiling'] * 1e3:.0f} us, "
              f"op {percent(rows[-1], 'library op, host ids'):.0f}%, best "
              f"{percent(rows[-1], best):.0f}% ({variant_name(*best)})", flush=True)
    big = [row for row in rows if row["bytes"] >= BIG]
    ranking = []
    for key in configurations() + [LIBRARY_KERNEL, "library op, host ids", "index_copy_"]:
        shares = [percent(row, key) for row in big]
        ranking.append((min(shares), statistics.median(shares),
                        sum(share >= 90 for share in shares), key))
    ranking.sort(key=lambda item: (-item[0], -item[1]))

    def label(key):
        if not isinstance(key, tuple):
            return key
        return variant_name(*key) + (" (the kernel before)" if key == PREVIOUS_KERNEL else "")

    table = common.markdown_table(
        ["kernel", "worst % of ceiling", "median %", f"cases >= 90% (of {len(big)})"],
        [[label(key), f"{low:.1f}", f"{middle:.1f}", str(count)]
         for low, middle, count, key in ranking])
    per_case = common.markdown_table(
        ["case", "MB moved", "ceiling (us)", "index_copy_ (us)", "op, host ids (us)",
         "op, device ids (us)", "library kernel (us)", "the kernel before (us)",
         "best variant (us)", "best variant"],
        [[row["case"], f"{row['bytes'] / 1e6:.0f}", f"{row['ms']['copy ceiling'] * 1e3:.1f}",
          f"{row['ms']['index_copy_'] * 1e3:.1f}",
          f"{row['ms']['library op, host ids'] * 1e3:.1f}",
          f"{row['ms']['library op, device ids'] * 1e3:.1f}",
          f"{row['ms'][LIBRARY_KERNEL] * 1e3:.1f}",
          f"{row['ms'][PREVIOUS_KERNEL] * 1e3:.1f}",
          f"{min(row['ms'][c] for c in configurations()) * 1e3:.1f}",
          variant_name(*min(configurations(), key=lambda c: row["ms"][c]))] for row in rows])
    klue_profile = profile_klue(flush)
    body = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}; CUDA-event medians of "
            f"{args.repeats} calls, caches flushed before each; 'op' is "
            "vocabxfer.transfer_rows_ as built (host ids include their check and copy).\n\n"
            f"Ranking over the {len(big)} cases of 100 MB or more:\n\n{table}\n\n"
            f"Per case:\n\n{per_case}\n\nThe klue call with host ids, profiled (20 calls):\n\n"
            f"```\n{klue_profile}\n```\n")
    common.write_result("kernel_sweep.md", "Row-copy kernel variants", body, device="cuda",
                        out_dir=args.out)
    common.write_json("kernel_sweep.json", {
        "rows": [{"case": row["case"], "bytes": row["bytes"],
                  "ms": {(variant_name(*k) if isinstance(k, tuple) else k): v
                         for k, v in row["ms"].items()}} for row in rows]}, out_dir=args.out)
    print(klue_profile)
    print(table)


if __name__ == "__main__":
    main()
