"""The complete jobs behind the command line, one function each: every input
is checked before the first long step, each step shows progress, and the
result's str is its report."""

import dataclasses
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from tqdm.auto import tqdm

from vocabxfer.checkpoints.atomic import check_output_folder
from vocabxfer.checkpoints.saving import save, save_tokenizer
from vocabxfer.checkpoints.streamed import transfer_checkpoint
from vocabxfer.cli.inputs import TransferInputs, read_transfer_inputs
from vocabxfer.errors import VocabxferError
from vocabxfer.initialisation.options import InitOptions
from vocabxfer.initialisation.plan import InitPlan
from vocabxfer.models.devices import DeviceLike
from vocabxfer.models.in_memory import transfer_model
from vocabxfer.models.loading import load_model
from vocabxfer.refinement import distributed
from vocabxfer.refinement.fidelity import REPORT_FILE, Fidelity, FidelityProbe
from vocabxfer.refinement.loop import Refinement, refine
from vocabxfer.refinement.settings import RefineSettings
from vocabxfer.training.corpus import corpus_paths, iter_passages
from vocabxfer.training.extension import TokenizerExtension, check_add, extend_tokenizer
from vocabxfer.training.tokenizer import TokenizerTraining, train_tokenizer
from vocabxfer.vocabularies.matching import TokenMap
from vocabxfer.vocabularies.readers import VocabSource, load_vocab
from vocabxfer.vocabularies.tokenizer_settings import with_source_limit

PathLike = Union[str, os.PathLike]


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
    inputs = read_transfer_inputs(
        model, out_dir, tokenizer=tokenizer, corpus=corpus, initialisation=initialisation,
        refinement=refinement, refine_corpus=refine_corpus, training=training, device=device,
        overwrite=overwrite, fidelity=fidelity, other_domain=other_domain)
    return run_transfer(inputs, corpus=corpus, initialisation=initialisation,
                        refinement=refinement, training=training, overwrite=overwrite,
                        link=link, keep=keep, show_progress=show_progress)


def run_transfer(inputs: TransferInputs, *, corpus: Optional[Sequence[PathLike]],
                 initialisation: InitOptions, refinement: Optional[RefineSettings],
                 training: TokenizerTraining, overwrite: bool, link: bool,
                 keep: Optional[Sequence[str]], show_progress: bool) -> FolderTransfer:
    """The steps of a folder transfer whose inputs are read (see
    ``transfer_to_folder``): train the target tokenizer on `corpus` when
    the inputs hold none, then stream, or load, measure, move, refine and
    save."""
    refining = refinement is not None
    target, probe = inputs.target, None
    measured: Optional[Fidelity] = None
    steps = Steps(total=(1 if inputs.streaming else 3) + (target is None) + refining +
                  (2 + refining) * inputs.measuring,
                  show=show_progress)
    plan_options = dict(initialisation.keywords(), device=inputs.device)
    trained = refined = None
    try:
        if target is None:
            with steps.step("train tokenizer"):
                target = load_vocab(train_tokenizer(
                    corpus, training.vocab_size, training.min_frequency, model=training.model,
                    like=inputs.location, show_progress=False, exclude=inputs.held_out))
                trained = target.name
        if inputs.streaming:
            with steps.step("stream the checkpoint"):
                streamed = transfer_checkpoint(inputs.location, target, inputs.out_path,
                                               overwrite=overwrite, link=link, **plan_options)
            return FolderTransfer(path=streamed.path, token_map=streamed.token_map,
                                  plan=streamed.plan, tensors=streamed.tensors,
                                  seconds=steps.seconds, trained_tokenizer=trained,
                                  weight_files=streamed.weight_files())
        source = load_vocab(inputs.location)  # the one reading of the source tokenizer
        with steps.step("load model"):
            loaded = load_model(inputs.location, inputs.device, config=inputs.config)
            teacher_rows = loaded.get_input_embeddings().weight.detach().clone() \
                if refining else None
        if inputs.measuring:
            # Before the transfer changes the model: the source's side.
            with steps.step("measure the source"):
                probe = FidelityProbe(loaded, source, inputs.held_out, inputs.other_passages)
        with steps.step("match and initialise"):
            result = transfer_model(loaded, source, target, **plan_options)
        if probe is not None:
            with steps.step("measure zero-shot"):
                measured = probe.report(loaded, target)
        if refining:
            with steps.step("refine"):
                refined = refine(loaded, teacher_rows, result, inputs.refine_passages,
                                 dataclasses.replace(refinement,
                                                     show_progress=show_progress and
                                                     refinement.show_progress),
                                 device=inputs.device,
                                 keep=keep if keep and reads_text_to_keep(loaded) else None)
                del teacher_rows
            if probe is not None:
                with steps.step("measure refined"):
                    probe.add_refined(measured, loaded, target)
        extra = {REPORT_FILE: measured.to_json()} if measured is not None else None
        with steps.step("save"):
            # In a distributed job every rank holds the same model; rank 0 writes it.
            path = save(result.model, with_source_limit(target, source), inputs.out_path,
                        overwrite=overwrite, extra_files=extra,
                        companions=inputs.companions) \
                if distributed.current().writes else inputs.out_path
    finally:
        steps.close()
    return FolderTransfer(path=path, token_map=result.token_map, plan=result.plan,
                          tensors=result.tensors, seconds=steps.seconds,
                          trained_tokenizer=trained, refinement=refined, fidelity=measured)


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
    if isinstance(refinement, RefineSettings):  # anything else is refused with the inputs
        if refinement.trainable == "all":
            raise VocabxferError("extend keeps every old row bit for bit, so refinement trains "
                                 "the new rows only; expected trainable None or 'new', got "
                                 "'all'")
        refinement = dataclasses.replace(refinement, trainable="new")
    if distributed.current().world > 1:
        raise VocabxferError("in a distributed job every rank must read the same target "
                             "tokenizer: extend it first (vocabxfer extend-tokenizer) and "
                             "refine with vocabxfer transfer --tokenizer EXTENDED --match exact")
    if other_domain is None:
        from vocabxfer.cli.demo import python_docs_corpus

        other_domain = [python_docs_corpus()]
    # Every old token keeps its id and its row: exact matching.
    initialisation = dataclasses.replace(initialisation, match="exact")
    # Every input is checked and read once, as for a transfer; the corpus's
    # held-out passages (only when refining: a streamed extension measures
    # nothing) are left out of what the extension learns from.
    inputs = read_transfer_inputs(
        model, out_dir, tokenizer=None, corpus=corpus, initialisation=initialisation,
        refinement=refinement, refine_corpus=None, training=TokenizerTraining(),
        device=device, overwrite=overwrite, fidelity=fidelity and refinement is not None,
        other_domain=other_domain)
    # The other domain's text is kept: no new token is one it would use, and
    # a causal LM's refinement reads it too (its new output rows learn to
    # stay out of it). Never the passages fidelity measures.
    measured = set(inputs.other_passages or ())
    keep = [passage for passage in iter_passages(corpus_paths(other_domain))
            if passage not in measured]
    extension = extend_tokenizer(inputs.location, corpus, add, min_frequency=min_frequency,
                                 exclude=inputs.held_out, keep=keep,
                                 show_progress=show_progress)
    result = run_transfer(
        dataclasses.replace(inputs, target=load_vocab(extension.tokenizer)), corpus=corpus,
        initialisation=initialisation, refinement=refinement, training=TokenizerTraining(),
        overwrite=overwrite, link=link, keep=keep if refinement is not None else None,
        show_progress=show_progress)
    result.extension = extension
    return result


def reads_text_to_keep(model: Any) -> bool:
    """Whether refinement of this model reads text to keep (a causal LM)."""
    from vocabxfer.refinement.objectives import objective_for

    return objective_for(model).trains_output


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
