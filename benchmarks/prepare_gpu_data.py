"""Writes what benchmarks/gpu.sh's refinement timings read into a folder
that travels with the tree to a GPU host (../shared does not): klue/bert-
base's vocab.txt and the first 50,000 NSMC documents (about 4 MB).

    python3 benchmarks/prepare_gpu_data.py [--data ../shared/data] [--to .gpu-data]
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DOCUMENTS = 50_000


def main() -> None:
    parser = common.argument_parser(__doc__, data=True)
    parser.add_argument("--to", type=Path, default=Path(".gpu-data"))
    args = parser.parse_args()
    data = common.require_data(args.data)
    args.to.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "vocab" / "klue-bert-base-vocab.txt", args.to)
    documents = common.nsmc_documents(data)[:DOCUMENTS]
    (args.to / "nsmc.txt").write_text("\n".join(documents) + "\n", encoding="utf-8")
    print(f"wrote {args.to}: klue-bert-base-vocab.txt and {len(documents):,} NSMC documents")


if __name__ == "__main__":
    main()
