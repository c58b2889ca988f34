"""What transfer_rows_'s host-side check of its indices costs on the CPU,
this checkout against another (--baseline), alternating in separate
processes in one run.

The check alone: rows of width 0, so the op does nothing but check (both
ranges, each target row once); 9,084, 100,000 and 200,000 random pairs.
Then the klue case as a whole (9,084 rows of 768 float32, warm caches).
Build both checkouts alike (e.g. FORCE_ONLY_CPU=1 python setup.py
build_ext --inplace in each). Writes host_check_cpu.md and .json.
"""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = ((32_000, 9_084), (128_000, 100_000), (256_000, 200_000))

CHILD = r"""
import json, statistics, sys, time, torch
sys.path.insert(0, sys.argv[1])
import vocabxfer
assert vocabxfer.__file__.startswith(sys.argv[1]), vocabxfer.__file__
cases = json.loads(sys.argv[2])
torch.manual_seed(0)

def median_seconds(call, repeats):
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)

out = {}
for rows, pairs in cases:
    target, source = torch.zeros(rows, 0), torch.zeros(rows, 0)
    target_ids, source_ids = torch.randperm(rows)[:pairs], torch.randperm(rows)[:pairs]
    out[f"check, {pairs:,} pairs"] = median_seconds(
        lambda: vocabxfer.transfer_rows_(target, target_ids, source, source_ids), 100)
target, source = torch.randn(30000, 768), torch.randn(32000, 768)
target_ids, source_ids = torch.randperm(30000)[:9084], torch.randperm(32000)[:9084]
out["klue, whole op (warm)"] = median_seconds(
    lambda: vocabxfer.transfer_rows_(target, target_ids, source, source_ids), 50)
print("RESULT " + json.dumps(out))
"""


def run(checkout: Path) -> dict:
    return common.run_child(CHILD, checkout, json.dumps(CASES))


def main() -> None:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--baseline", type=Path, required=True,
                        help="another checkout, built in place, to time side by side")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="the checkout to measure (default: this one)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    checkouts = {"baseline": args.baseline.resolve(), "this checkout": args.checkout.resolve()}
    runs = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():
            runs[name].append(run(checkout))
    rows, summary = [], {}
    for key in runs["this checkout"][0]:
        old = statistics.median(result[key] for result in runs["baseline"])
        new = statistics.median(result[key] for result in runs["this checkout"])
        summary[key] = {"baseline": old, "this checkout": new}
        rows.append([key, f"{old * 1e6:,.1f}", f"{new * 1e6:,.1f}", f"{new / old:.2f}x"])
    body = (f"Baseline {args.baseline}, this checkout {args.checkout}; medians of "
            f"{args.rounds} alternating rounds, each the median of 50-100 calls.\n\n"
            + common.markdown_table(["case", "baseline (µs)", "this checkout (µs)",
                                     "this / baseline"], rows))
    print(body)
    common.write_result("host_check_cpu.md", "transfer_rows_: the host check, old against new",
                        body, out_dir=args.out)
    common.write_json("host_check_cpu.json", {"runs": summary}, out_dir=args.out)


if __name__ == "__main__":
    main()
