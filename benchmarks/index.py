"""Writes benchmarks/RESULTS.md from the result files the scripts wrote:
for each kind (speed, quality, gpu), each measurement's latest file, with
the date, commit, machine and versions it recorded, and its first table.
Nothing in RESULTS.md is typed by hand; run this after a benchmark.

    python3 benchmarks/index.py
"""

import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

KIND_TITLES = {
    "speed": "Speed (this project's CPU machine unless the file says otherwise)",
    "quality": "Quality (figures on held-out passages)",
    "gpu": "GPU (lent NVIDIA H200; random weights of the real shapes)",
}
HEADER_FIELDS = ("date", "commit", "machine", "python", "GPU")


def committed_in(path: Path) -> str:
    """The commit that last wrote `path` (following renames)."""
    output = subprocess.run(["git", "-C", str(path.parent), "log", "-1", "--follow", "--diff-filter=AM",
                             "--format=%h", "--", path.name],
                            capture_output=True, text=True).stdout.strip()
    return output or "not committed yet"


def first_table(text: str) -> str:
    lines, table = text.splitlines(), []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return "\n".join(table)


def entry(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    title = text.splitlines()[0].lstrip("# ").strip() if text else path.stem
    header = [line for line in text.splitlines()[1:12]
              if line.startswith("- ") and line[2:].split(":")[0].split(" ")[0] in HEADER_FIELDS]
    if not any(line.startswith("- commit:") for line in header):
        header.insert(1, f"- commit: not recorded (written before results recorded it; "
                         f"committed in {committed_in(path)})")
    link = path.relative_to(common.BENCHMARKS).as_posix()
    parts = [f"### {title}", "", f"[{link}]({link})", "", *header]
    table = first_table(text)
    if table:
        parts += ["", table]
    return "\n".join(parts)


def main() -> None:
    sections = ["# Results", "",
                "Written by `benchmarks/index.py` from the files in `*/results/`: each "
                "measurement's latest run, as its script wrote it (the first table of each; "
                "the file has the rest). Ratios hold within one file: every one was measured "
                "side by side in one run.", ""]
    for kind in common.KINDS:
        files = sorted((common.BENCHMARKS / kind / "results").glob("*.md"))
        files = [path for path in files if path.name != "README.md"]
        if not files:
            continue
        sections += [f"## {KIND_TITLES[kind]}", ""]
        sections += [entry(path) + "\n" for path in files]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(sections)).rstrip() + "\n"
    out = common.BENCHMARKS / "RESULTS.md"
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
