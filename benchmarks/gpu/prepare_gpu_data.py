"""Writes what benchmarks/gpu.sh's refinement timings read into a folder
that travels with the tree to a GPU host (../shared does not): klue/bert-
base's vocab.txt, the first 50,000 NSMC documents (about 4 MB) and, where
eval_lm.py has written SmolLM2-135M's folder, its tokenizer (3.5 MB; the
weights stay behind: too big to travel, and timings use random ones).

    python3 benchmarks/gpu/prepare_gpu_data.py [--data ../shared/data] [--to .gpu-data]
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

DOCUMENTS = 50_000
SMOLLM2 = Path.home() / ".cache" / "vocabxfer" / "smollm2-135m-instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


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
    if all((SMOLLM2 / name).is_file() for name in TOKENIZER_FILES):
        (args.to / "smollm2-tokenizer").mkdir(exist_ok=True)
        for name in TOKENIZER_FILES:
            shutil.copy(SMOLLM2 / name, args.to / "smollm2-tokenizer")
        print(f"and SmolLM2's tokenizer from {SMOLLM2}")
    else:
        print(f"no SmolLM2 tokenizer at {SMOLLM2} (run benchmarks/eval_lm.py once): the "
              "SmolLM2-sized refine timing will train a stand-in")


if __name__ == "__main__":
    main()
