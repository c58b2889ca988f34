"""The complete jobs behind the command line, one function each: every input
is checked before the first long step, each step shows progress, and the
result's str is its report."""

import dataclasses
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from tqdm.auto import tqdm

from vocabxfer.checkpoints.atomic import check_apart, check_output_folder, input_path
from vocabxfer.checkpoints.saving import save, save_tokenizer
from vocabxfer.checkpoints.streamed import has_safetensors, transfer_checkpoint
from vocabxfer.errors import VocabxferError
from vocabxfer.initialisation.options import InitOptions
from vocabxfer.initialisation.plan import InitPlan
from vocabxfer.models.devices import DeviceLike, resolve_device
from vocabxfer.models.in_memory import transfer_model
from vocabxfer.models.loading import load_config, load_model, model_location
from vocabxfer.refinement import distributed
from vocabxfer.refinement.fidelity import (HELD_OUT_PASSAGES, REPORT_FILE, Fidelity,
                                           FidelityProbe, hold_out)
from vocabxfer.refinement.loop import Refinement, refine
from vocabxfer.refinement.settings import RefineSettings
from vocabxfer.training.corpus import (Reservoir, check_corpus, corpus_paths, iter_passages,
                                       read_texts)
from vocabxfer.training.extension import TokenizerExtension, check_add, extend_tokenizer
from vocabxfer.training.tokenizer import TokenizerTraining, train_tokenizer
from vocabxfer.vocabularies.matching import TokenMap
from vocabxfer.vocabularies.readers import VocabSource, load_vocab

PathLike = Union[str, os.PathLike]
FINGERPRINT_BYTES = 65536


@dataclass
class FolderTransfer:
    """What transfer_to_folder did: where it wrote, the token map and plan,
    the tensors it refilled, how long each step took, and, when it streamed
    the checkpoint, what became of its weight files."""

    path: Path
    token_map: TokenMap
    plan: InitPlan
    tensors: List[str]
    seconds: Dict[str, float] = field(default_factory=dict)
    trained_tokenizer: Optional[str] = None
    weight_files: Optional[str] = None  # None when the model was loaded whole
    refinement: Optional[Refinement] = None
    fidelity: Optional[Fidelity] = None
    extension: Optional[TokenizerExtension] = None

    def __str__(self) -> str:
        lines = [str(self.extension)] if self.extension is not None else []
        if self.trained_tokenizer:
            lines.append(f"target tokenizer: {self.trained_tokenizer} "
                         f"({len(self.token_map.target):,} tokens)")
        lines += [str(self.token_map.report), str(self.plan),
                  "vocabulary-sized tensors refilled: " + ", ".join(self.tensors)]
        if self.weight_files:
            lines.append(f"streamed the checkpoint; weight files: {self.weight_files}")
        if self.refinement:
            lines.append(str(self.refinement))
        if self.fidelity:
            lines.append(str(self.fidelity) + f" (in {REPORT_FILE})")
        lines += ["timings: " + ", ".join(f"{step} {seconds:.2f} s"
                                          for step, seconds in self.seconds.items()),
                  f"wrote {self.path}"]
        return "\n".join(lines)


@dataclass
class TrainedTokenizer:
    path: Path
    tokenizer: Any

    def __str__(self) -> str:
        return (f"trained {self.tokenizer.name_or_path}: {len(self.tokenizer):,} tokens; "
                f"wrote {self.path}")


class Steps:
    """A tqdm bar over the job's steps that also times each one."""

    def __init__(self, total: int, show: bool):
        self.bar = tqdm(total=total, desc="vocabxfer", unit="step", leave=False,
                        disable=not show)
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.bar.set_description(name)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


def transfer_to_folder(model: PathLike, out_dir: PathLike, *,
                       tokenizer: Optional[VocabSource] = None,
                       corpus: Optional[Sequence[PathLike]] = None,
                       initialisation: InitOptions = InitOptions(),
                       refinement: Optional[RefineSettings] = None,
                       refine_corpus: Optional[Sequence[PathLike]] = None,
                       training: TokenizerTraining = TokenizerTraining(),
                       device: DeviceLike = None, overwrite: bool = False, link: bool = False,
                       fidelity: bool = True, other_domain: Optional[Sequence[PathLike]] = None,
                       keep: Optional[Sequence[str]] = None,
                       show_progress: bool = True) -> FolderTransfer:
    """Move the model in folder (or hub id) `model` to a new vocabulary and
    write the ready folder `out_dir`: the target `tokenizer`, or one trained
    on `corpus` (as `training` says) that follows the model's tokenizer. The
    rows start as `initialisation` says. Every input is checked, and read
    once, before the first long step; the folder appears whole or not at
    all.

    Without `refinement`, a local folder with safetensors weights is
    streamed (see ``transfer_checkpoint``: only the vocabulary-sized tensors
    are loaded, ``link`` hard-links the shards that do not change; no
    fidelity report, since no model is run); anything else (a hub id,
    pickle weights read with ``torch.load(weights_only=True)``) is loaded
    whole, moved by ``transfer_model`` and saved. With `refinement` (a
    ``RefineSettings``: ``RefineSettings()`` is the default time budget for
    the device) the model is loaded whole, moved, and refined on
    `refine_corpus` (default: `corpus`) with the transfer's own token map
    before it is saved.

    With ``fidelity`` (the default), whenever the model is loaded and text
    was given (`refine_corpus`, else `corpus`), up to 200 passages of it (at
    most a tenth) are held out from tokenizer training and refinement, and
    the moved model is measured against the source on them, zero-shot and
    after refinement (see ``refinement/fidelity.py``); the figures are
    printed and written to vocabxfer_fidelity.json in the output folder.
    With `other_domain` (text files of another domain), up to 200 of its
    passages are measured the same way, with the share of them the target
    tokenizer reads exactly as the source's did (what an extended
    vocabulary must keep). `keep` (passages) is given to refine as the text
    whose predictions a causal LM's new output rows must leave alone.

    Raises VocabxferError (or one of its kinds) for bad input, OSError for
    files, FileExistsError for an output folder that exists.
    """
    for name, value, kind in (("initialisation", initialisation, InitOptions),
                              ("training", training, TokenizerTraining)):
        if not isinstance(value, kind):
            raise VocabxferError(f"{name} must be an {kind.__name__} object, got a "
                                 f"{type(value).__name__}")
    if refinement is not None and not isinstance(refinement, RefineSettings):
        raise VocabxferError(f"refinement must be a RefineSettings or None, got a "
                             f"{type(refinement).__name__}")
    if (tokenizer is None) == (corpus is None):
        raise VocabxferError("give either the target tokenizer or a corpus to train it on")
    ranks = distributed.current()
    if tokenizer is None and ranks.world > 1:
        raise VocabxferError("in a distributed job every rank must read the same target "
                             "tokenizer, and training one is not bit-for-bit repeatable: train "
                             "it first (vocabxfer train-tokenizer) and pass it (--tokenizer)")
    refining = refinement is not None
    if ranks.world > 1 and not refining:
        raise VocabxferError("this process is one rank of a distributed job, but only "
                             "refinement runs on several: without it every rank would write "
                             "the same folder; run the transfer in one process, or refine")
    if not refining and refine_corpus is not None:
        raise VocabxferError("refine_corpus (--refine-corpus) is given but no refinement is "
                             "asked for; pass refinement=RefineSettings(...) (--refine, "
                             "--refine-steps N or --refine-seconds S) too, or leave it out")
    out_path = check_output_folder(out_dir, overwrite)
    plot_path = refinement.plot if refining else None
    resolved_device = resolve_device(device)
    location = model_location(model)
    model_folder = Path(location) if Path(location).is_dir() else None
    # --force replaces the output folder: never one that holds what this
    # run reads or writes beside it.
    inputs = {"the input model folder": model_folder,
              "the target tokenizer": input_path(tokenizer), "the loss plot": plot_path}
    for what, files in (("the corpus file", corpus), ("the refine corpus file", refine_corpus),
                        ("the other domain's file", other_domain)):
        for file in ([] if files is None else
                     [files] if isinstance(files, (str, os.PathLike)) else files):
            inputs[f"{what} {file}"] = input_path(file)
    check_apart(out_path, inputs)
    config = load_config(location)
    target = load_vocab(tokenizer) if tokenizer is not None else None
    if corpus is not None:
        check_corpus(corpus_paths(corpus))
    refine_texts = refine_corpus if refine_corpus is not None else corpus
    if refining:
        if refine_texts is None:
            raise VocabxferError("refining needs text: give refine_corpus (--refine-corpus) or "
                                 "a corpus")
        check_corpus(corpus_paths(refine_texts))
    if other_domain is not None:
        check_corpus(corpus_paths(other_domain))
    if ranks.world > 1:
        distributed.check_agreement(ranks, job_settings(
            config, target, refine_texts if refining else None,
            initialisation=initialisation, refinement=refinement, fidelity=fidelity))

    streaming = model_folder is not None and has_safetensors(model_folder) and not refining
    fidelity_texts = refine_texts if refining else corpus
    measuring = fidelity and not streaming and fidelity_texts is not None
    # The text refinement reads, read once: held-out passages come out of it.
    passages = read_texts(list(corpus_paths(refine_texts))) if refining else None
    held_out = hold_out(passages if passages is not None else
                        iter_passages(corpus_paths(fidelity_texts)),
                        seed=initialisation.seed) if measuring else []
    measuring = measuring and bool(held_out)  # a corpus too small to spare any
    probe = None
    measured: Optional[Fidelity] = None
    steps = Steps(total=(1 if streaming else 3) + (corpus is not None) + refining +
                  (2 + refining) * measuring,
                  show=show_progress)
    plan_options = dict(initialisation.keywords(), device=resolved_device)
    trained = refined = None
    try:
        if target is None:
            with steps.step("train tokenizer"):
                target = load_vocab(train_tokenizer(
                    corpus, training.vocab_size, training.min_frequency, model=training.model,
                    like=location, show_progress=False, exclude=held_out))
                trained = target.name
        if streaming:
            with steps.step("stream the checkpoint"):
                streamed = transfer_checkpoint(model_folder, target, out_path,
                                               overwrite=overwrite, link=link, **plan_options)
            return FolderTransfer(path=streamed.path, token_map=streamed.token_map,
                                  plan=streamed.plan, tensors=streamed.tensors,
                                  seconds=steps.seconds, trained_tokenizer=trained,
                                  weight_files=streamed.weight_files())
        source = load_vocab(location)  # the one reading of the source tokenizer
        with steps.step("load model"):
            loaded = load_model(location, resolved_device)
            teacher_rows = loaded.get_input_embeddings().weight.detach().clone() \
                if refining else None
        if measuring:
            # Before the transfer changes the model: the source's side.
            with steps.step("measure the source"):
                probe = FidelityProbe(loaded, source, held_out, sample_passages(
                    corpus_paths(other_domain), initialisation.seed)
                    if other_domain is not None else None)
        with steps.step("match and initialise"):
            result = transfer_model(loaded, source, target, **plan_options)
        if probe is not None:
            with steps.step("measure zero-shot"):
                measured = probe.report(loaded, target)
        if refining:
            with steps.step("refine"):
                excluded = set(held_out)
                refined = refine(loaded, teacher_rows, result,
                                 [passage for passage in passages if passage not in excluded],
                                 dataclasses.replace(refinement, plot=plot_path,
                                                     show_progress=show_progress and
                                                     refinement.show_progress),
                                 device=resolved_device,
                                 keep=keep if keep and reads_text_to_keep(loaded) else None)
                del teacher_rows
            if probe is not None:
                with steps.step("measure refined"):
                    probe.add_refined(measured, loaded, target)
        extra = {REPORT_FILE: measured.to_json()} if measured is not None else None
        with steps.step("save"):
            # In a distributed job every rank holds the same model; rank 0 writes it.
            path = save(result.model, target, out_path, overwrite=overwrite,
                        extra_files=extra) if ranks.writes else out_path
    finally:
        steps.close()
    return FolderTransfer(path=path, token_map=result.token_map, plan=result.plan,
                          tensors=result.tensors, seconds=steps.seconds,
                          trained_tokenizer=trained, refinement=refined, fidelity=measured)


def sample_passages(paths: Sequence[Path], seed: int,
                    count: int = HELD_OUT_PASSAGES) -> List[str]:
    """Up to `count` distinct passages of the files, drawn uniformly (a
    reservoir: the files are streamed)."""
    return Reservoir.of(dict.fromkeys(iter_passages(paths)), count, seed).sample


def extend_to_folder(model: PathLike, out_dir: PathLike, corpus: Sequence[PathLike],
                     add: int, *, initialisation: InitOptions = InitOptions(),
                     refinement: Optional[RefineSettings] = None, min_frequency: int = 2,
                     other_domain: Optional[Sequence[PathLike]] = None,
                     device: DeviceLike = None, overwrite: bool = False, link: bool = False,
                     fidelity: bool = True, show_progress: bool = True) -> FolderTransfer:
    """Extend the model's vocabulary: learn up to `add` tokens of the
    corpus with its own tokenizer's model (``extend_tokenizer``), keep every
    token it has, and write the ready folder `out_dir`. The old rows (input
    embeddings, an untied head and its bias) are copied bit for bit (exact
    matching: every old token keeps its id); the new rows start from FVT;
    `refinement` trains the new rows only (on the corpus). No new token is
    one that `other_domain`'s text (default: the Python documentation the
    demo reads, which every CPython carries) would use. Without
    refinement a safetensors checkpoint is streamed. Rows a model carries
    beyond its tokenizer's tokens (a vocabulary padded to a multiple, as
    Qwen's) are read by no token and are not carried over: the new tokens
    take the ids from the tokenizer's size on.

    With ``fidelity`` and refinement, held-out passages of the corpus
    (never learned from) measure the moved model against the source, and
    `other_domain` (default: the Python documentation the demo reads, which
    every CPython carries) measures what was kept: the share of its
    passages tokenized exactly as before, and the same measure there.

    Raises VocabxferError (or one of its kinds) for bad input before the
    first long step; an extension that adds nothing writes nothing."""
    check_add(add)
    out_path = check_output_folder(out_dir, overwrite)
    location = model_location(model)
    model_folder = Path(location) if Path(location).is_dir() else None
    inputs = {"the input model folder": model_folder}
    inputs.update({f"the corpus file {file}": input_path(file) for file in corpus})
    check_apart(out_path, inputs)
    load_config(location)
    check_corpus(corpus_paths(corpus))
    measuring = fidelity and refinement is not None
    held_out = hold_out(iter_passages(corpus_paths(corpus)), seed=initialisation.seed) \
        if measuring else []
    if other_domain is None:
        from vocabxfer.cli.demo import python_docs_corpus

        other_domain = [python_docs_corpus()]
    else:
        check_corpus(corpus_paths(other_domain))
    # The other domain's text is kept: no new token is one it would use, and
    # a causal LM's refinement reads it too (its new output rows learn to
    # stay out of it). Never the passages fidelity measures.
    measured = set(sample_passages(corpus_paths(other_domain), initialisation.seed)) \
        if measuring else set()
    keep = [passage for passage in iter_passages(corpus_paths(other_domain))
            if passage not in measured]
    extension = extend_tokenizer(location, corpus, add, min_frequency=min_frequency,
                                 exclude=held_out, keep=keep, show_progress=show_progress)
    result = transfer_to_folder(
        location, out_path, tokenizer=extension.tokenizer,
        initialisation=dataclasses.replace(initialisation, match="exact"),
        refinement=refinement, refine_corpus=corpus if refinement is not None else None,
        device=device, overwrite=overwrite, link=link, fidelity=fidelity,
        other_domain=other_domain if measuring else None,
        keep=keep if refinement is not None else None,
        show_progress=show_progress)
    result.extension = extension
    return result


def reads_text_to_keep(model: Any) -> bool:
    """Whether refinement of this model reads text to keep (a causal LM)."""
    from vocabxfer.refinement.objectives import objective_for

    return objective_for(model).trains_output


def file_fingerprint(path: Path) -> Tuple[int, bytes, bytes]:
    """Size, first and last 64 KiB of a file: the same file on every rank
    gives the same, cheaply, however large it is."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(FINGERPRINT_BYTES)
        handle.seek(max(0, size - FINGERPRINT_BYTES))
        tail = handle.read(FINGERPRINT_BYTES)
    return size, head, tail


def job_settings(config: Any, target: Any, refine_texts: Optional[Sequence[PathLike]],
                 **options: Any) -> Dict[str, object]:
    """What every rank of a distributed job must agree on: the options, the
    model's config, the target vocabulary and the refine corpus's files."""
    settings: Dict[str, object] = {}
    for name, value in options.items():
        if dataclasses.is_dataclass(value):  # each field by name: say which one differs
            settings.update({f"{name}.{field.name}": repr(getattr(value, field.name))
                             for field in dataclasses.fields(value)})
        else:
            settings[name] = repr(value)
    settings["the model's config"] = sorted(
        (key, repr(value)) for key, value in config.to_dict().items()
        if not key.startswith("_name"))
    settings["the target tokenizer"] = target.tokens if target is not None else None
    settings["the refine corpus"] = None if refine_texts is None else [
        file_fingerprint(path) for path in corpus_paths(refine_texts)]
    return settings


def train_tokenizer_to_folder(corpus: Sequence[PathLike], out_dir: PathLike, *,
                              vocab_size: int = 30000, min_frequency: int = 2,
                              model: Optional[str] = None, like: Optional[VocabSource] = None,
                              overwrite: bool = False) -> TrainedTokenizer:
    """Train a tokenizer on `corpus` (see train_tokenizer) and write it to
    `out_dir` as a folder AutoTokenizer loads. The output folder is checked
    before training starts."""
    out_path = check_output_folder(out_dir, overwrite)
    tokenizer = train_tokenizer(corpus, vocab_size, min_frequency, model=model, like=like)
    return TrainedTokenizer(save_tokenizer(tokenizer, out_path, overwrite=overwrite), tokenizer)
