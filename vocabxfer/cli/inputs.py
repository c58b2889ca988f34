"""A folder transfer's inputs, each checked and read once before the first
long step: the output folder (never one that holds an input), the model's
config, the target vocabulary, the corpora and the passages set aside to
measure with, and the device. In a distributed job every rank must agree on
all of them."""

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from vocabxfer.checkpoints.atomic import check_apart, check_output_folder, input_path
from vocabxfer.checkpoints.companions import read_companions
from vocabxfer.checkpoints.streamed import has_safetensors
from vocabxfer.errors import VocabxferError
from vocabxfer.initialisation.options import InitOptions
from vocabxfer.models.devices import DeviceLike, resolve_device
from vocabxfer.models.loading import load_config, model_location
from vocabxfer.refinement import distributed
from vocabxfer.refinement.settings import RefineSettings
from vocabxfer.training.corpus import (check_corpus, corpus_paths, hold_out, iter_passages,
                                       read_texts, sample_passages)
from vocabxfer.training.tokenizer import TokenizerTraining
from vocabxfer.vocabularies.readers import VocabSource, load_vocab
from vocabxfer.vocabularies.vocab import Vocab

PathLike = Union[str, os.PathLike]
FINGERPRINT_BYTES = 65536


@dataclass(frozen=True)
class TransferInputs:
    """What a folder transfer reads, read once. `held_out` are the passages
    fidelity measures on (empty when it does not measure); they are left out
    of `refine_passages` and of tokenizer training."""

    out_path: Path
    location: str  # the model's folder, or its hub id
    config: Any  # the model's config, read and checked once (load_config)
    companions: Dict[str, Path]  # files carried beside the model (companions.py)
    target: Optional[Vocab]  # None: trained on the corpus
    device: torch.device
    streaming: bool  # a safetensors folder moved without loading the model
    refine_passages: Optional[List[str]]  # None: no refinement
    held_out: List[str]
    other_passages: Optional[List[str]]

    @property
    def measuring(self) -> bool:
        return bool(self.held_out)


def read_transfer_inputs(model: PathLike, out_dir: PathLike, *,
                         tokenizer: Optional[VocabSource], corpus: Optional[Sequence[PathLike]],
                         initialisation: InitOptions, refinement: Optional[RefineSettings],
                         refine_corpus: Optional[Sequence[PathLike]],
                         training: TokenizerTraining, device: DeviceLike, overwrite: bool,
                         fidelity: bool,
                         other_domain: Optional[Sequence[PathLike]]) -> TransferInputs:
    """Check every input of ``transfer_to_folder`` (see there) and read it."""
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
    resolved_device = resolve_device(device)
    location = model_location(model)
    model_folder = Path(location) if Path(location).is_dir() else None
    # --force replaces the output folder: never one that holds what this
    # run reads or writes beside it.
    inputs = {"the input model folder": model_folder,
              "the target tokenizer": input_path(tokenizer),
              "the loss plot": refinement.plot if refining else None}
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
    # A streamed transfer reads them itself (transfer_checkpoint).
    companions = read_companions(model_folder) \
        if model_folder is not None and not streaming else {}
    fidelity_texts = refine_texts if refining else corpus
    # The text refinement reads, read once: held-out passages come out of it.
    passages = read_texts(list(corpus_paths(refine_texts))) if refining else None
    held_out = hold_out(passages if passages is not None else
                        iter_passages(corpus_paths(fidelity_texts)), seed=initialisation.seed) \
        if fidelity and not streaming and fidelity_texts is not None else []
    excluded = set(held_out)
    return TransferInputs(
        out_path=out_path, location=location, config=config, companions=companions,
        target=target, device=resolved_device, streaming=streaming,
        refine_passages=None if passages is None else
        [passage for passage in passages if passage not in excluded],
        held_out=held_out,
        other_passages=sample_passages(corpus_paths(other_domain), initialisation.seed)
        if held_out and other_domain is not None else None)


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
