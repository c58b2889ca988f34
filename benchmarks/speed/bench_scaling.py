"""How the row transfer and the matching scale with vocabulary size, row width
and dtype.

Rows: vocabularies of 32k to 256k rows, widths of 768 to 8,192, float32,
bfloat16 and float32 -> bfloat16 (converting), 30% of target rows matched
(random pairs). Each case times transfer_rows_, index_copy_(index_select) and
a plain copy of the same bytes (the ceiling; a converting copy_ for the
converting cases), every call starting with cold caches. Cases whose
matrices would exceed --max-gb each are left out (and listed). Matching:
load_vocab + match_vocab on synthetic WordPiece vocabularies of 30k to 256k
tokens.

Plots: GB/s against bytes moved, one line per method and dtype; and matching
time against vocabulary size. Writes results/scaling_<device>.md,
.json, scaling_rows_<device>.png and scaling_match.png (the latter on CPU
only).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_match  # noqa: E402
import common  # noqa: E402

import vocabxfer  # noqa: E402

VOCABS = [32_000, 64_000, 128_000, 256_000]
WIDTHS = [768, 2_048, 4_096, 8_192]
# (source dtype, target dtype)
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
          (torch.float32, torch.bfloat16)]
MATCHED = 0.3
METHODS = ("transfer_rows_", "index_copy_", "copy ceiling")
# The op with its indices already where the kernel reads them and no check
# (indices_checked, device indices on a GPU): the kernel and the call's
# fixed cost, without the host's check and copy of the ids.
KERNEL_ALONE = "transfer_rows_ (indices_checked)"


def dtype_label(dtypes) -> str:
    names = [str(dtype).replace("torch.", "") for dtype in dtypes]
    return names[0] if names[0] == names[1] else " -> ".join(names)


def run_case(rows, width, dtypes, device, repeats, flush):
    source_dtype, target_dtype = dtypes
    pairs = int(rows * MATCHED)
    source = common.random_matrix(rows, width, source_dtype, device, seed=rows + width)
    # Written once up front, so that no method pays for first-touch page faults.
    target = torch.zeros(rows, width, dtype=target_dtype, device=device)
    target_ids = common.random_ids(pairs, rows, device, seed=rows)
    source_ids = common.random_ids(pairs, rows, device, seed=width)
    host_ids = target_ids.cpu(), source_ids.cpu()
    ceiling_source = source[:pairs].clone()
    ceiling_target = torch.zeros(pairs, width, dtype=target_dtype, device=device)
    calls = {
        # Host indices, as every token map holds them (checked on the host,
        # one asynchronous copy); index_copy_ gets them on the device.
        "transfer_rows_": lambda: vocabxfer.transfer_rows_(target, host_ids[0], source,
                                                           host_ids[1]),
        "index_copy_": lambda: target.index_copy_(
            0, target_ids, source.index_select(0, source_ids).to(target_dtype)),
        "copy ceiling": lambda: ceiling_target.copy_(ceiling_source),
        KERNEL_ALONE: lambda: vocabxfer.transfer_rows_(target, target_ids, source, source_ids,
                                                       indices_checked=True),
    }
    calls["transfer_rows_"]()
    if not torch.equal(target[target_ids], source[source_ids].to(target_dtype)):
        raise SystemExit(f"transfer_rows_ gave wrong rows for {rows}x{width} {dtypes}")
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            samples[name] += common.time_call(call, device, repeats=1, warmup=1, reset=flush)
    bytes_moved = pairs * width * (source.element_size() + target.element_size())
    return bytes_moved, {name: common.median(values) for name, values in samples.items()}


def plot_rows(results, path, device):
    plt = common.pyplot()
    figure, axis = plt.subplots(figsize=(9, 5))
    styles = {"transfer_rows_": ("#1f4e99", "o"), "index_copy_": ("#d98c8c", "s"),
              "copy ceiling": ("#999999", "^")}
    fills = dict(zip((dtype_label(dtypes) for dtypes in DTYPES), ("full", "none", "left")))
    for label, fill in fills.items():
        cases = sorted((r for r in results if r["dtype"] == label), key=lambda r: r["bytes"])
        if not cases:
            continue
        for method in METHODS:
            colour, marker = styles[method]
            axis.plot([c["bytes"] / 1e6 for c in cases],
                      [c["bytes"] / c["seconds"][method] / 1e9 for c in cases],
                      color=colour, marker=marker, linestyle="none", fillstyle=fill,
                      label=f"{method} ({label})")
    axis.set_xscale("log")
    axis.set_xlabel("MB moved (read + written)")
    axis.set_ylabel("GB/s")
    axis.set_title(f"Row transfer throughput on {device} (30% of rows, random pairs, cold "
                   "caches)\nfilled: float32, hollow: bfloat16, half: float32 -> bfloat16; "
                   "32k-256k rows x 768-8,192 wide",
                   fontsize=10)
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    common.save_figure(figure, path)


def plot_match(rows, path):
    plt = common.pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for mode, colour in (("exact", "#1f4e99"), ("canonical", "#3b9d6b")):
        points = [(size, seconds) for size, m, seconds in rows if m == mode]
        axis.plot([p[0] for p in points], [p[1] * 1e3 for p in points], marker="o",
                  color=colour, label=f"load_vocab x2 + match_vocab ({mode})")
    axis.axhline(1000, color="#d98c8c", linestyle=":", label="goal at 256k: 1 s")
    axis.set_xlabel("vocabulary size (source = target)")
    axis.set_ylabel("ms")
    axis.set_title("Matching time against vocabulary size (CPU)", fontsize=10)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    common.save_figure(figure, path)


def main(argv=None):
    parser = common.argument_parser(__doc__, data=False)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--max-gb", type=float, default=None,
                        help="largest matrix per case in GB (default: 1 on CPU, 8 on GPU)")
    parser.add_argument("--quick", action="store_true", help="fewer cases and repeats")
    args = parser.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    max_bytes = (args.max_gb or (8.0 if device.startswith("cuda") else 1.0)) * 1e9
    repeats = 2 if args.quick else 5
    vocabs = VOCABS[:2] if args.quick else VOCABS
    widths = WIDTHS[:2] if args.quick else WIDTHS
    out_dir = args.out or common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    flush = common.CacheFlusher(device)

    results, skipped, table = [], [], []
    for dtypes in DTYPES:
        for rows in vocabs:
            for width in widths:
                element = max(torch.finfo(dtype).bits // 8 for dtype in dtypes)
                if rows * width * element > max_bytes:
                    skipped.append(f"{rows:,}x{width:,} {dtype_label(dtypes)}")
                    continue
                moved, seconds = run_case(rows, width, dtypes, device, repeats, flush)
                results.append({"rows": rows, "width": width, "dtype": dtype_label(dtypes),
                                "bytes": moved, "seconds": seconds})
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                ceiling = seconds["copy ceiling"]
                table.append([f"{rows:,}", f"{width:,}", dtype_label(dtypes),
                              f"{moved / 1e6:,.0f}"]
                             + [f"{seconds[m] * 1e3:,.2f} ({moved / seconds[m] / 1e9:.0f} GB/s)"
                                for m in METHODS]
                             + [f"{100 * ceiling / seconds['transfer_rows_']:.0f}%",
                                f"{seconds['index_copy_'] / seconds['transfer_rows_']:.1f}x",
                                f"{100 * ceiling / seconds[KERNEL_ALONE]:.0f}%"])
                print("  ".join(table[-1]))
    device_name = device.split(":")[0]
    plot_rows(results, out_dir / f"scaling_rows_{device_name}.png", device)
    body = (f"30% of rows matched, random pairs; median of {repeats} calls per method, methods "
            "taking turns, caches flushed before each call. transfer_rows_ reads host indices "
            "(checked and copied to the device on every call); the last column times it with "
            f"{'device' if device.startswith('cuda') else 'the same'} indices and "
            "indices_checked=True (no check, no copy of the ids).\n\n"
            + common.markdown_table(["rows", "width", "dtype", "MB moved"]
                                    + [f"{m} ms" for m in METHODS]
                                    + ["% of ceiling", "vs index_copy_",
                                       "indices_checked: % of ceiling"], table)
            + (f"\n\nLeft out (matrix over {max_bytes / 1e9:.0f} GB): " + ", ".join(skipped)
               if skipped else "")
            + f"\n\n![rows](scaling_rows_{device_name}.png)")

    if device_name == "cpu":
        match_rows = []
        for size in (bench_match.SIZES[:2] if args.quick else bench_match.SIZES):
            source, target = bench_match.synthetic_pair(size)
            for mode in ("exact", "canonical"):
                seconds = bench_match.time_match(source, target, mode, repeats)
                match_rows.append((size, mode, seconds))
                print(f"match {size:,} {mode} {seconds * 1e3:.0f} ms")
        plot_match(match_rows, out_dir / "scaling_match.png")
        body += ("\n\n## Matching\n\n" + common.markdown_table(
            ["vocabulary", "mode", "ms"],
            [[f"{size:,}", mode, f"{seconds * 1e3:,.0f}"] for size, mode, seconds in match_rows])
            + "\n\n![match](scaling_match.png)")
    path = common.write_result(f"scaling_{device_name}.md", f"Scaling on {device}", body,
                               device, out_dir)
    common.write_json(f"scaling_{device_name}.json", {"device": device, "cases": results},
                      out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
