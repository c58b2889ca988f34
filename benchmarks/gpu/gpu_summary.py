"""Reads what benchmarks/gpu.sh left in a folder and states pass or fail per
goal of the GPU work, in summary.md there. Exits 1 if any goal failed or
could not be measured.

Steps that must exit 0: the build, the whole suite, the ops' index-path and
distributed tests run on their own (tests_gpu_paths), vocabxfer doctor.

Goals (transfer_rows_ on an H100 or H200, measured side by side in one run):
- indices on the host: a valid call makes no synchronisation and one
  launch (its kernel), segment_mean_ likewise; the klue case takes at most
  0.8x index_copy_ and at most the copy ceiling + 10 us;
- indices on the device: one synchronisation and at most two launches
  (memsets included) besides the kernel, segment_mean_ likewise; the klue
  case takes at most index_copy_'s time + one synchronisation (measured in
  the same run);
- at least 90% of the same-run copy ceiling in every scaling case that moves
  100 MB or more, converting cases included: with host indices (checked and
  copied on every call), and with device indices the caller checked (the
  kernel alone);
- the built kernel alone (kernel_sweep.py, CUDA events) at least 90% of the
  ceiling in every case of 100 MB or more;
- never slower than index_copy_, in any case of any benchmark, for both
  index placements;
- on the CPU, at least 85% of the copy ceiling in the klue case;
- refine, 500 steps (random weights of the real shapes): MiniLM-sized at
  most 4 s, BERT-base-sized at most 8 s, SmolLM2-135M-sized at most 15 s.
"""

import json
import sys
from pathlib import Path

CEILING = "copy of same bytes (ceiling)"
INDEX_COPY = "index_copy_(index_select)"
OP = "vocabxfer.transfer_rows_"
OP_DEVICE = "vocabxfer.transfer_rows_ (device indices)"


def load(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


# refine: (result file, what, seconds allowed for its 500 steps)
REFINE_GOALS = [("refine_cuda_minilm-random.json", "MiniLM-sized", 4.0),
                ("refine_cuda_bert-base.json", "BERT-base-sized", 8.0),
                ("refine_cuda_smollm2.json", "SmolLM2-135M-sized", 15.0)]


def refine_goals(folder: Path):
    results = []
    for name, what, allowed in REFINE_GOALS:
        run = load(folder, name)
        if run is None:
            results.append((f"refine, {what}: 500 steps in at most {allowed:.0f} s", None,
                            f"{name} is missing"))
            continue
        measured = run["runs"]["this checkout"]
        steps, seconds = measured["steps"], measured["median_step_seconds"]
        results.append((f"refine, {what}: 500 steps in at most {allowed:.0f} s",
                        steps >= 500 and seconds <= allowed,
                        f"{steps} steps in {seconds:.1f} s (whole call "
                        f"{measured['median_seconds']:.1f} s, tokenising the pool included)"))
    return results


def budget_lines(folder: Path):
    """How many steps refine(seconds=S) ran (gpu.sh's budget part): the
    step counts the CPU's quality runs stand in for. Figures, not goals."""
    lines = []
    for path in sorted(folder.glob("refine_cuda_*_budget-*.json")):
        run = json.loads(path.read_text())
        measured = run["runs"]["this checkout"]
        shape = path.stem.removeprefix("refine_cuda_").rpartition("_budget-")
        lines.append(f"- {shape[0]}, a budget of {shape[2]}: {measured['steps']:,} steps, "
                     f"the call {measured['median_seconds']:.1f} s (before the first step "
                     f"{measured['median_seconds'] - measured['median_step_seconds']:.1f} s)")
    return lines


def zero_copy_lines(folder: Path):
    """zero_copy_probe's wall-clock figures (gpu.sh's zerocopy part): whether
    the kernel should read host ids from pinned memory. Figures, not goals."""
    probe = load(folder, "zero_copy_probe.json")
    lines = []
    for row in (probe or {}).get("rows", []):
        wall = row["us_wall"]
        lines.append(f"- {row['case']}: ids copied, then the kernel "
                     f"{wall['ids copied, then the kernel']:.0f} us; the kernel reads the "
                     f"pinned ids {wall['the kernel reads the pinned ids']:.0f} us; the op "
                     f"with host ids {wall['library op, host ids']:.0f} us; index_copy_ "
                     f"{wall['index_copy_']:.0f} us (wall, to the end of the device's work)")
    return lines


def goals(folder: Path):
    """(goal, passed or None when unmeasured, detail) for every goal."""
    rows = load(folder, "transfer_rows_cuda.json")
    scaling = load(folder, "scaling_cuda.json")
    cpu = load(folder, "transfer_rows_cpu.json")
    status = {}
    for line in (folder / "status.txt").read_text().splitlines() if (
            folder / "status.txt").is_file() else []:
        step, _, code = line.partition(" ")
        status[step] = code
    results = []
    for step in ("build", "tests", "tests_gpu_paths", "doctor"):
        code = status.get(step)
        results.append((f"{step} exits 0", None if code is None else code == "0",
                        f"exit status {code}" if code is not None else "did not run"))

    if rows and "host_costs" in rows:
        for call, syncs in (("transfer_rows_ (klue)", 0),
                            ("segment_mean_ (2,000 segments of 3)", 0),
                            ("transfer_rows_ (klue, device indices)", 1),
                            ("segment_mean_ (2,000 segments of 3, device indices)", 1)):
            cost = rows["host_costs"].get(call)
            allowed = 2 if syncs else 0
            goal = (f"{call}: at most {allowed} launches besides its kernel, {syncs} "
                    "synchronisation" + ("" if syncs == 1 else "s"))
            if cost is None:
                results.append((goal, None, "not in transfer_rows_cuda.json"))
                continue
            extra = cost["launches"] + cost["memsets"] - 1
            results.append((goal, extra <= allowed and cost["synchronisations"] == syncs,
                            f"{cost['launches']} kernel launches, {cost['memsets']} memsets, "
                            f"{cost['copies']} copies, {cost['synchronisations']} "
                            "synchronisations"))
    else:
        results.append(("host costs of a call", None, "transfer_rows_cuda.json is missing"))

    if rows:
        klue = rows["cases"]["klue"]["seconds"]
        op, baseline, ceiling = klue[OP], klue[INDEX_COPY], klue[CEILING]
        results.append(("klue, host indices: at most 0.8x index_copy_", op <= 0.8 * baseline,
                        f"{op * 1e6:.0f} us against {baseline * 1e6:.0f} us "
                        f"({op / baseline:.2f}x)"))
        results.append(("klue, host indices: at most the copy ceiling + 10 us",
                        op <= ceiling + 10e-6,
                        f"{op * 1e6:.0f} us against a ceiling of {ceiling * 1e6:.0f} us"))
        device_op, sync = klue.get(OP_DEVICE), rows.get("synchronisation_seconds")
        goal = "klue, device indices: at most index_copy_ + one synchronisation"
        if device_op is None or sync is None:
            results.append((goal, None, "not in transfer_rows_cuda.json"))
        else:
            results.append((goal, device_op <= baseline + sync,
                            f"{device_op * 1e6:.0f} us against {baseline * 1e6:.0f} + "
                            f"{sync * 1e6:.0f} us"))
    else:
        results.append(("klue case", None, "transfer_rows_cuda.json is missing"))

    slower = []
    if rows:
        slower += [f"{name} ({method})" for name, case in rows["cases"].items()
                   for method in (OP, OP_DEVICE) if method in case["seconds"]
                   and case["seconds"][method] > case["seconds"][INDEX_COPY]]
    if scaling:
        low = []
        for case in scaling["cases"]:
            seconds = case["seconds"]
            name = f"{case['rows']:,}x{case['width']:,} {case['dtype']}"
            share = seconds["copy ceiling"] / seconds["transfer_rows_"]
            if case["bytes"] >= 100e6 and share < 0.90:
                low.append(f"{name} ({100 * share:.0f}%)")
            if seconds["transfer_rows_"] > seconds["index_copy_"]:
                slower.append(name)
        big = sum(case["bytes"] >= 100e6 for case in scaling["cases"])
        results.append(("scaling, host indices: at least 90% of the copy ceiling from 100 MB up",
                        not low, f"{big - len(low)} of {big} cases" + (
                            ": below in " + ", ".join(low) if low else "")))
        kernel = "transfer_rows_ (indices_checked)"
        if all(kernel in case["seconds"] for case in scaling["cases"]):
            low = [f"{case['rows']:,}x{case['width']:,} {case['dtype']} "
                   f"({100 * case['seconds']['copy ceiling'] / case['seconds'][kernel]:.0f}%)"
                   for case in scaling["cases"] if case["bytes"] >= 100e6
                   and case["seconds"]["copy ceiling"] < 0.90 * case["seconds"][kernel]]
            results.append(("scaling, indices checked by the caller (device ids, the kernel "
                            "alone): at least 90% of the copy ceiling from 100 MB up", not low,
                            f"{big - len(low)} of {big} cases" + (
                                ": below in " + ", ".join(low) if low else "")))
    else:
        results.append(("scaling cases", None, "scaling_cuda.json is missing"))
    sweep = load(folder, "kernel_sweep.json")
    kernel = "library kernel (device ids, indices_checked)"
    goal = "the kernel (CUDA events, kernel_sweep): at least 90% of the copy ceiling from 100 MB up"
    timed = [row for row in (sweep or {}).get("rows", []) if kernel in row["ms"]]
    if timed:
        big = [row for row in timed if row["bytes"] >= 100e6]
        low = [f"{row['case']} ({100 * row['ms']['copy ceiling'] / row['ms'][kernel]:.0f}%)"
               for row in big if row["ms"]["copy ceiling"] < 0.90 * row["ms"][kernel]]
        results.append((goal, not low, f"{len(big) - len(low)} of {len(big)} cases" + (
            ": below in " + ", ".join(low) if low else "")))
    else:
        results.append((goal, None, "kernel_sweep.json is missing or predates the library "
                                    "kernel's row"))
    if rows or scaling:
        results.append(("never slower than index_copy_", not slower,
                        "slower in " + ", ".join(slower) if slower else "faster in every case"))

    if cpu:
        klue = cpu["cases"]["klue"]["seconds"]
        share = klue[CEILING] / klue[OP]
        results.append(("CPU klue: at least 85% of the copy ceiling", share >= 0.85,
                        f"{100 * share:.0f}%"))
    else:
        results.append(("CPU klue case", None, "transfer_rows_cpu.json is missing"))
    return results + refine_goals(folder)


def main(argv=None):
    folder = Path((argv or sys.argv[1:] or ["benchmarks/gpu/results"])[0])
    lines = ["# GPU goals", ""]
    failed = 0
    for goal, passed, detail in goals(folder):
        verdict = "PASS" if passed else ("FAIL" if passed is False else "NOT MEASURED")
        failed += verdict != "PASS"
        lines.append(f"- **{verdict}** {goal}: {detail}")
    budgets = budget_lines(folder)
    if budgets:
        lines += ["", "## refine's time budget on this GPU", ""] + budgets
    probe = zero_copy_lines(folder)
    if probe:
        lines += ["", "## Host ids read by the kernel, or copied first (zero_copy_probe)", ""] \
            + probe
    machine = folder / "machine.log"
    if machine.is_file():
        lines += ["", "## Machine", "", "```", machine.read_text().strip(), "```"]
    text = "\n".join(lines) + "\n"
    (folder / "summary.md").write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
