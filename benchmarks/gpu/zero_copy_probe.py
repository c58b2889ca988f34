"""Would transfer_rows_ gain by reading host ids straight from pinned memory?
A GPU-only probe for issue 19, run by benchmarks/gpu.sh (part zerocopy) in a
process of its own: were a kernel to read host memory it may not, the fault
would end this process and nothing else.

Today a call with host ids packs them into pinned memory, copies them to the
device, checks them on the host while the copy runs, then launches the
kernel. The other way: the kernel reads the pinned ids itself, over the bus
(pinned memory is mapped into the device's address space under unified
addressing), and the copy goes; the check can then no longer hide behind it.
For each case, on the device's clock (CUDA events, caches flushed before
every call) and on the wall clock (from the call to the end of the device's
work), medians:

- ids copied, then the kernel: the packed pinned ids copied to the device,
  then the library's kernel shape reading them (the op's device work);
- the kernel reads the pinned ids: the same kernel given the host addresses;
- for reference: the library op with host ids (packing and check included),
  index_copy_, and the copy ceiling.

kernel_sweep's kernels read int64 ids, where the op packs int32 below 2^31
rows: both ways here move twice the op's id bytes, alike.
Every way's result is checked against torch's before it is timed. Packing
and the check are not in the first two ways: what the op would cost with
zero-copy reads is about the second way plus the op's host work (the op
with host ids minus the first way, plus the check the copy hides today).

Writes zero_copy_probe.md and .json to --out.
"""

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402  (first: it puts speed/ on the path)
import bench_transfer_rows  # noqa: E402
import kernel_sweep  # noqa: E402

import vocabxfer  # noqa: E402

CASES = ("klue", "klue-all-rows", "llm", "llm f32->bf16")
THREADS = 256
# The library's kernel shape (csrc/cuda): one block per group of rows, 4
# vectors a thread below 6 KiB rows and when converting, 1 above. In
# kernel_sweep's numbering, unroll 4 plain is variant 8 and unroll 1 is 0.
WIDE_ROW_BYTES = 6 * 1024


def library_variant(width: int, source_dtype, target_dtype) -> int:
    converting = source_dtype != target_dtype
    return 8 if converting or width * target_dtype.itemsize < WIDE_ROW_BYTES else 0


def probe_case(module, name, flush, repeats):
    target_rows, source_rows, width, pairs, source_dtype, target_dtype = \
        bench_transfer_rows.CASES[name]
    target, target_ids, source, source_ids = bench_transfer_rows.build_case(
        target_rows, source_rows, width, pairs, source_dtype, target_dtype, "cuda")
    expected = source[source_ids].to(target_dtype)
    pinned = torch.stack([target_ids, source_ids]).cpu().pin_memory()
    on_device = torch.empty_like(pinned, device="cuda")
    kernel = module.convert_rows if source_dtype != target_dtype else module.copy_rows
    shape = (library_variant(width, source_dtype, target_dtype), THREADS, 0)
    host_ids = target_ids.cpu(), source_ids.cpu()
    ceiling_source = source[:pairs].clone()
    ceiling_target = torch.empty(pairs, width, dtype=target_dtype, device="cuda")

    def copied_then_kernel():
        on_device.copy_(pinned, non_blocking=True)
        kernel(target, on_device[0], source, on_device[1], *shape)

    ways = {
        "ids copied, then the kernel": copied_then_kernel,
        "the kernel reads the pinned ids": lambda: kernel(target, pinned[0], source, pinned[1],
                                                          *shape),
        "library op, host ids": lambda: vocabxfer.transfer_rows_(target, host_ids[0], source,
                                                                 host_ids[1]),
        "index_copy_": lambda: target.index_copy_(
            0, target_ids, source.index_select(0, source_ids).to(target_dtype)),
        "copy ceiling": lambda: ceiling_target.copy_(ceiling_source),
    }
    result = {"case": name, "us_device": {}, "us_wall": {}}
    for way, call in ways.items():
        if way != "copy ceiling":
            target.fill_(float("nan"))
            call()
            torch.cuda.synchronize()
            if not torch.equal(target[target_ids], expected):
                raise SystemExit(f"{name}: {way} wrote wrong rows")
        result["us_device"][way] = 1e3 * statistics.median(
            kernel_sweep.event_times(call, flush, repeats))
        result["us_wall"][way] = 1e6 * statistics.median(
            common.time_call(call, "cuda", repeats, warmup=1, reset=flush))
        print(f"{name}: {way}: device {result['us_device'][way]:.1f} us, wall "
              f"{result['us_wall'][way]:.1f} us", flush=True)
    return result


def main():
    parser = common.argument_parser(__doc__, data=False)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("zero_copy_probe needs a CUDA device")
    module = kernel_sweep.compile_variants()
    flush = common.CacheFlusher("cuda")
    rows = [probe_case(module, name, flush, args.repeats) for name in CASES]
    ways = list(rows[0]["us_device"])
    table = common.markdown_table(
        ["case"] + [f"{way} (device / wall, us)" for way in ways],
        [[row["case"]] + [f"{row['us_device'][way]:.1f} / {row['us_wall'][way]:.1f}"
                          for way in ways] for row in rows])
    body = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}; medians of "
            f"{args.repeats} calls, caches flushed before each. Device: CUDA events around "
            "the call; wall: from the call to the end of the device's work.\n\n" + table + "\n")
    print(body)
    common.write_result("zero_copy_probe.md", "Host ids read by the kernel, or copied first",
                        body, device="cuda", out_dir=args.out)
    common.write_json("zero_copy_probe.json", {"rows": rows}, out_dir=args.out)


if __name__ == "__main__":
    main()
