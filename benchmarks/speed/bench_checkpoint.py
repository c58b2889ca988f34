"""Moves a checkpoint shaped like Llama-3-8B's vocabulary tensors (128,256 x
4,096 bf16, untied head; 2 layers of the real width) to a 32,000-token
byte-level BPE, three ways, each in a child process:

  1. vocabxfer.transfer_checkpoint: stream the safetensors, read only the
     vocabulary-sized tensors;
  2. vocabxfer in memory: load_model + transfer_model + save;
  3. transformers: from_pretrained + resize_token_embeddings + save_pretrained
     (truncates instead of transferring: the baseline of time and memory).

Wall time and peak resident memory (the child's own VmHWM) per way;
goals: the streamed way at least 3x faster than the in-memory one with at
most half its peak memory, and at most 1.5 x the vocabulary-sized tensors'
bytes + 700 MB. The streamed and in-memory folders are checked to hold the
same tensors first.

The tokenizers are trained here on real text (needs ../shared/data): the
source a 128,256-token byte-level BPE with Llama 3's special tokens, the
target a 32,000-token BPE on NSMC trained like it. The checkpoint (about
3 GB) is built once under --work. Writes checkpoint_<device>.md, .json and
.png to results/ beside it (or --out).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

METHODS = ("vocabxfer streamed", "vocabxfer streamed --link", "vocabxfer in memory",
           "transformers resize")
SHAPES = {  # vocabulary, width, intermediate, layers, heads, kv heads, target vocabulary
    "full": (128_256, 4_096, 14_336, 2, 32, 8, 32_000),
    "quick": (128_256, 1_024, 3_584, 2, 8, 2, 32_000),
}
SHARD_SIZE = {"full": "1GB", "quick": "200MB"}
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"] + \
    [f"<|reserved_special_token_{index}|>" for index in range(254)]


# ---- building the inputs, once ------------------------------------------------

def source_tokenizer(data: Path, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from vocabxfer.cli.demo import python_docs_passages

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIALS), min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    text = common.nsmc_documents(data, include_test=True) + python_docs_passages()
    tokenizer.train_from_iterator(text, trainer=trainer)
    tokenizer.add_special_tokens(SPECIALS)
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>",
                                   eos_token="<|end_of_text|>")


def build_inputs(work: Path, data: Path, shape: str, layers: int, tag: str) -> None:
    """The checkpoint folder (sharded bf16 safetensors + the source
    tokenizer) and the target tokenizer, unless already there."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import vocabxfer

    vocab, width, intermediate, _, heads, kv_heads, target_size = SHAPES[shape]
    model_dir, target_dir = work / f"llama-{tag}", work / f"target-{tag}"
    if (model_dir / "model.safetensors.index.json").is_file() and target_dir.is_dir():
        return
    subprocess.run(["rm", "-rf", str(model_dir), str(target_dir)], check=True)
    print(f"building the inputs under {work} (once)")
    tokenizer = source_tokenizer(data, vocab)
    assert len(tokenizer) == vocab, len(tokenizer)
    config = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.to_empty(device="cpu")  # bf16 from the start: no float32 copy of 2.6 B weights
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(str(model_dir), max_shard_size=SHARD_SIZE[shape])
    tokenizer.save_pretrained(str(model_dir))
    del model
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "nsmc.txt"
        corpus.write_text("\n".join(common.nsmc_documents(data)) + "\n", encoding="utf-8")
        target = vocabxfer.train_tokenizer(corpus, vocab_size=target_size, model="bpe",
                                           like=tokenizer, show_progress=False)
    target.save_pretrained(str(target_dir))


# ---- one way, in a child process ----------------------------------------------------

def resident_bytes(field: str = "VmHWM") -> int:
    """This process's own peak (VmHWM) or current (VmRSS) resident memory;
    the address space is the process's own: the parent's size is not in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/self/status: peak memory needs Linux")


def run_method(method: str, model_dir: Path, target_dir: Path, out: Path, device: str,
               link: bool) -> None:
    # What every way imports anyway, so that the baseline holds it.
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast  # noqa

    import vocabxfer
    baseline = resident_bytes("VmRSS")
    started = time.perf_counter()

    target = vocabxfer.load_vocab(target_dir)
    if method == "vocabxfer streamed":
        vocabxfer.transfer_checkpoint(model_dir, target, out, device=device, link=link)
    elif method == "vocabxfer in memory":
        model = vocabxfer.load_model(model_dir, device)
        vocabxfer.transfer_model(model, model_dir, target, device=device)
        vocabxfer.save(model, target, out)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device)
        model.resize_token_embeddings(len(target))
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(target_dir)).save_pretrained(str(out))
    print(json.dumps({"peak_bytes": resident_bytes(), "baseline_bytes": baseline,
                      "work_seconds": time.perf_counter() - started}))


def measure(method: str, model_dir: Path, target_dir: Path, out: Path, device: str):
    """(seconds, peak resident bytes, resident bytes after the imports,
    seconds after the imports) of one way, run in a fresh process."""
    link = method.endswith("--link")
    command = [sys.executable, __file__, "--child", method.removesuffix(" --link"),
               "--model-dir", str(model_dir), "--target-dir", str(target_dir),
               "--child-out", str(out), "--device", device] + (["--link"] if link else [])
    started = time.perf_counter()
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{method} failed (exit status {child.returncode})")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    return seconds, report["peak_bytes"], report["baseline_bytes"], report["work_seconds"]


def settle_disk(timeout: float = 30.0) -> None:
    """Write out dirty pages and wait until the kernel has little left to
    write back, so that one way's writes do not slow the next down."""
    os.sync()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meminfo = dict(line.split(":", 1) for line in
                       Path("/proc/meminfo").read_text().splitlines())
        pending = sum(int(meminfo[key].split()[0]) for key in ("Dirty", "Writeback"))
        if pending < 50_000:  # KiB
            return
        time.sleep(0.2)


def same_tensors(first: Path, second: Path) -> bool:
    from safetensors import safe_open

    def tensors(folder: Path):
        names = {}
        for shard in sorted(folder.glob("*.safetensors")):
            with safe_open(str(shard), "pt") as handle:
                names.update({name: (shard, name) for name in handle.keys()})
        return names

    left, right = tensors(first), tensors(second)
    if sorted(left) != sorted(right):
        return False
    for name, (shard, _) in left.items():
        with safe_open(str(shard), "pt") as a, safe_open(str(right[name][0]), "pt") as b:
            if not torch.equal(a.get_tensor(name), b.get_tensor(name)):
                return False
    return True


def plot(rows, path: Path, title: str) -> None:
    plt = common.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = [row["method"] for row in rows]
    colours = ["#1f4e99", "#3b7dd8", "#8cb3d9", "#d98c8c"]
    for axis, key, label in ((axes[0], "seconds", "wall time (s)"),
                             (axes[1], "peak_gb", "peak resident memory (GB)")):
        values = [row[key] for row in rows]
        bars = axis.barh(names, values, color=colours[:len(values)])
        axis.invert_yaxis()
        axis.set_xlabel(label)
        for bar, value in zip(bars, values):
            axis.text(value, bar.get_y() + bar.get_height() / 2, f" {value:.1f}", va="center")
    figure.suptitle(title, fontsize=10)
    common.save_figure(figure, path)


def main(argv=None):
    parser = common.argument_parser(__doc__, data=True)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="1,024 wide instead of 4,096 (the vocabulary stays 128,256)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) /
                        "vocabxfer-bench-checkpoint",
                        help="where the inputs are built once and outputs written")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three ways (3)")
    parser.add_argument("--layers", type=int, default=None,
                        help="transformer layers (default 2); more show how each way's "
                        "memory grows with the model")
    parser.add_argument("--child", help=argparse_hidden())
    parser.add_argument("--model-dir", type=Path, help=argparse_hidden())
    parser.add_argument("--target-dir", type=Path, help=argparse_hidden())
    parser.add_argument("--child-out", type=Path, help=argparse_hidden())
    parser.add_argument("--link", action="store_true", help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.child:
        run_method(args.child, args.model_dir, args.target_dir, args.child_out, args.device,
                   args.link)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    data = common.require_data(args.data)
    shape = "quick" if args.quick else "full"
    layers = args.layers or SHAPES[shape][3]
    tag = shape if layers == SHAPES[shape][3] else f"{shape}-{layers}layers"
    args.work.mkdir(parents=True, exist_ok=True)
    build_inputs(args.work, data, shape, layers, tag)
    model_dir, target_dir = args.work / f"llama-{tag}", args.work / f"target-{tag}"
    from vocabxfer.checkpoints.streamed import open_checkpoint

    checkpoint = open_checkpoint(model_dir)
    vocab_bytes = sum(checkpoint.entry(name).size
                      for name in ("model.embed_tokens.weight", "lm_head.weight"))
    total_bytes = sum(entry.size for file in checkpoint.files.values()
                      for entry in file.entries.values())

    # Ways take turns, round after round, each starting with the disk quiet
    # (dirty pages of the previous way written out) and the input files in
    # the page cache, as a second run on a server would find them.
    outs = {method: args.work / f"out-{tag}-{method.replace(' ', '-')}" for method in METHODS}
    samples = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            subprocess.run(["rm", "-rf", str(outs[method])], check=True)
            settle_disk()
            seconds, peak, baseline, work = measure(method, model_dir, target_dir,
                                                    outs[method], args.device)
            samples[method].append((seconds, peak, baseline, work))
            print(f"{method:<26} {seconds:7.1f} s ({work:5.1f} s after the imports)  peak "
                  f"{peak / 1e9:5.2f} GB (after imports {baseline / 1e9:4.2f} GB)")
    rows = [{"method": method,
             "seconds": common.median([sample[0] for sample in samples[method]]),
             "peak_gb": max(sample[1] for sample in samples[method]) / 1e9,
             "growth_gb": max(sample[1] - sample[2] for sample in samples[method]) / 1e9,
             "work_seconds": common.median([sample[3] for sample in samples[method]])}
            for method in METHODS]
    if not same_tensors(outs["vocabxfer streamed"], outs["vocabxfer in memory"]):
        raise SystemExit("the streamed and in-memory folders differ; not reporting")
    streamed, linked, in_memory = rows[0], rows[1], rows[2]
    bound = (1.5 * vocab_bytes + 700e6) / 1e9
    goals = [
        ("streamed at least 3x faster than in memory",
         in_memory["seconds"] / streamed["seconds"] >= 3,
         f"{in_memory['seconds'] / streamed['seconds']:.1f}x; with --link "
         f"{in_memory['seconds'] / linked['seconds']:.1f}x"),
        ("streamed peak memory at most half the in-memory peak",
         streamed["peak_gb"] <= in_memory["peak_gb"] / 2,
         f"{streamed['peak_gb']:.2f} GB against {in_memory['peak_gb']:.2f} GB; above what "
         f"the imports hold, {streamed['growth_gb']:.2f} GB against "
         f"{in_memory['growth_gb']:.2f} GB"),
        ("streamed peak at most 1.5 x the vocabulary-sized tensors + 700 MB",
         streamed["peak_gb"] <= bound, f"{streamed['peak_gb']:.2f} GB against {bound:.2f} GB"),
    ]
    vocab, width, _, _, _, _, target_size = SHAPES[shape]
    title = (f"Llama-shaped checkpoint, {vocab:,} x {width:,} bf16 untied, {layers} layers "
             f"({total_bytes / 1e9:.1f} GB) -> {target_size:,}-token BPE, on {args.device}")
    device_name = args.device.split(":")[0]
    if layers != SHAPES[shape][3]:
        device_name += f"_{layers}layers"
    out_dir = args.out or common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, out_dir / f"checkpoint_{device_name}.png", title)
    body = (f"{title}. Vocabulary-sized tensors: {vocab_bytes / 1e9:.2f} GB. Each way runs in "
            f"a fresh process, {args.repeats} rounds with the ways taking turns (median time, "
            "highest peak); before each run the previous output is removed and the disk "
            "settled (dirty pages written back). Peak resident memory is the "
            "process's own (VmHWM), memory-mapped file pages included. The streamed and "
            "in-memory folders were checked to hold the same tensors.\n\n"
            + common.markdown_table(["way", "wall time (s)", "after the imports (s)",
                                     "peak memory (GB)", "peak above the imports (GB)"],
                                    [[row["method"], f"{row['seconds']:.1f}",
                                      f"{row['work_seconds']:.1f}", f"{row['peak_gb']:.2f}",
                                      f"{row['growth_gb']:.2f}"] for row in rows])
            + "\n\n" + "\n".join(f"- **{'PASS' if passed else 'FAIL'}** {goal}: {detail}"
                                 for goal, passed, detail in goals)
            + f"\n\n![checkpoint](checkpoint_{device_name}.png)")
    path = common.write_result(f"checkpoint_{device_name}.md", "Streaming a checkpoint", body,
                               args.device, out_dir)
    common.write_json(f"checkpoint_{device_name}.json",
                      {"rows": rows, "vocab_bytes": vocab_bytes, "total_bytes": total_bytes,
                       "goals": [[goal, passed, detail] for goal, passed, detail in goals]},
                      out_dir)
    print(f"wrote {path}")


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
