"""Moves a checkpoint folder to a new vocabulary without loading the model:
only the vocabulary-sized tensors are read (from its safetensors, single or
sharded), rebuilt by the same plan as transfer_model, in their dtype, and
written into new shards; every other tensor is copied as bytes (or its whole
shard copied or hard-linked), never entering memory as a tensor. Memory
grows with the vocabulary, not with the number of layers.
"""

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from vocabxfer.checkpoints import safetensors_io
from vocabxfer.models.architecture import VocabTensor, vocab_tensors
from vocabxfer.checkpoints.atomic import check_apart, check_output_folder, input_path, write_folder
from vocabxfer.checkpoints.companions import copy_companions, read_companions
from vocabxfer.models.devices import DeviceLike, resolve_device
from vocabxfer.errors import ModelError
from vocabxfer.initialisation.fvt import DEFAULT_PIECE_WEIGHTS, PieceWeighting
from vocabxfer.initialisation.plan import (STATISTICS_CHUNK_ROWS, InitPlan, plan_initialisation,
                                           row_statistics)
from vocabxfer.models.loading import PICKLES, load_config, model_class
from vocabxfer.vocabularies.matching import TokenMap, match_vocab
from vocabxfer.models.in_memory import (as_stored, check_fits, check_seed, target_size_for,
                                        tensor_generator, update_config)
from vocabxfer.vocabularies.readers import VocabSource, first_line
from vocabxfer.vocabularies.as_transformers import as_transformers_tokenizer
from vocabxfer.vocabularies.tokenizer_settings import with_source_limit
from vocabxfer.checkpoints.untrusted import check_inside, check_model_folder, read_json

logger = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PathLike = Union[str, os.PathLike]


@dataclass
class Checkpoint:
    """A folder's safetensors weights: the files, and which file holds each
    tensor."""

    folder: Path
    files: Dict[str, safetensors_io.SafetensorsFile]
    weight_map: Dict[str, str]
    index: Optional[Dict[str, Any]]  # the index document; None for one file

    def entry(self, name: str) -> safetensors_io.Entry:
        return self.files[self.weight_map[name]].entries[name]


def has_safetensors(folder: Path) -> bool:
    return (folder / SINGLE_FILE).is_file() or (folder / INDEX_FILE).is_file()


def weight_file(folder: Path, name: object, where: str) -> Path:
    """The path of a weight file the checkpoint names, refused unless it is
    a plain file name inside `folder`: no separator, no `..`, not absolute,
    and no symbolic link that leaves the folder (except into the blobs of a
    Hugging Face cache snapshot, whose files are such links). A crafted
    index must never make vocabxfer read, or write, anything else."""
    if not isinstance(name, str):
        raise ModelError(f"{folder}: {where} names the weight file {name!r}, expected a file "
                         "name (a string)")
    # "/" and "\\" are the separators of every platform os.path knows.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ModelError(f"{folder}: {where} names the weight file {name!r}, which is not a "
                         "plain file name inside the model folder; refusing a path that "
                         "could lead outside it")
    if not name.endswith(".safetensors"):
        raise ModelError(f"{folder}: {where} names the weight file {name!r}, expected a "
                         "file name ending in .safetensors; refusing a name that the output's "
                         "config or tokenizer files could take")
    path = folder / name
    if not path.is_file():
        raise ModelError(f"{folder}: {where} names the weight file {name}, which is "
                         "missing; the checkpoint is incomplete")
    check_inside(folder, path, ModelError)
    return path


def read_index(folder: Path) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The index document and its weight map, with every part checked."""
    path = folder / INDEX_FILE
    check_inside(folder, path, ModelError)
    index = read_json(path, "tokenizer", ModelError, "a safetensors index")
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise ModelError(f"{path}: is not a safetensors index (expected a JSON object with a "
                         "weight_map object)")
    metadata = index.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ModelError(f"{path}: its metadata is a JSON {type(metadata).__name__}, expected "
                         "an object")
    weight_map = index["weight_map"]
    checked = set()  # hundreds of tensors share a few dozen files: each checked once
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or shard not in checked:
            weight_file(folder, shard, f"the index's entry for {name}")
            checked.add(shard)
    return index, weight_map


def open_checkpoint(folder: Path) -> Checkpoint:
    """The folder's safetensors weights, with every shard the index names
    present, inside the folder, and its header valid. Raises ModelError
    otherwise, and for a folder without them."""
    if (folder / INDEX_FILE).is_file():
        index, weight_map = read_index(folder)
        files = {shard: safetensors_io.SafetensorsFile(folder / shard)
                 for shard in sorted(set(weight_map.values()))}
        for name, shard in weight_map.items():
            if name not in files[shard]:
                raise ModelError(f"{folder}: the index puts {name} in {shard}, which does not "
                                 "hold it")
        return Checkpoint(folder, files, weight_map, index)
    if (folder / SINGLE_FILE).is_file():
        file = safetensors_io.SafetensorsFile(weight_file(folder, SINGLE_FILE, "the folder"))
        return Checkpoint(folder, {SINGLE_FILE: file}, dict.fromkeys(file.entries, SINGLE_FILE),
                          None)
    if any((folder / name).is_file() for name in PICKLES):
        raise ModelError(f"{folder}: has only pickle weights (pytorch_model.bin), which cannot "
                         "be streamed; vocabxfer transfer loads them with "
                         "torch.load(weights_only=True) instead")
    raise ModelError(f"{folder}: has no weights (expected model.safetensors, a sharded "
                     "model.safetensors.index.json, or pytorch_model.bin)")


def check_stored_shapes(checkpoint: Checkpoint,
                        stored: List[Tuple[VocabTensor, List[str]]]) -> None:
    """Every stored vocabulary-sized tensor must have the shape and a float
    dtype its role requires: the model's (from its config) shape, so that
    no row is read from another tensor's bytes."""
    for vocab_tensor, names in stored:
        for name in names:
            entry = checkpoint.entry(name)
            if entry.shape != tuple(vocab_tensor.shape):
                raise ModelError(
                    f"{checkpoint.folder}: {name} ({vocab_tensor.role}) is stored with shape "
                    f"{list(entry.shape)}, but the model's config makes it "
                    f"{list(vocab_tensor.shape)}; the checkpoint does not fit its config")
            if entry.dtype not in safetensors_io.FLOAT_DTYPES:
                raise ModelError(
                    f"{checkpoint.folder}: {name} ({vocab_tensor.role}) is stored as "
                    f"{entry.dtype}; expected a floating-point dtype vocabxfer can rebuild "
                    f"({', '.join(safetensors_io.FLOAT_DTYPES)})")


def check_ties(checkpoint: Checkpoint, stored: List[Tuple[VocabTensor, List[str]]],
               config: Any) -> None:
    """Names the architecture ties (one tensor, as the config's
    tie_word_embeddings makes them) must hold the same bytes where the
    checkpoint stores each: a config that says tied over weights that are
    not would otherwise replace the stored head by the embedding rows."""
    for vocab_tensor, names in stored:
        for other in names[1:]:
            if not same_stored_tensor(checkpoint, names[0], other, vocab_tensor.row_dim):
                raise ModelError(
                    f"{checkpoint.folder}: config.json makes {other} one tensor with "
                    f"{names[0]} (tie_word_embeddings: "
                    f"{getattr(config, 'tie_word_embeddings', None)}), but the checkpoint "
                    "stores them with different values; the config does not describe these "
                    "weights (set tie_word_embeddings to false if the head is its own)")


def same_stored_tensor(checkpoint: Checkpoint, first: str, second: str, row_dim: int) -> bool:
    """Whether two stored tensors hold the same dtype, shape and bytes, read
    a chunk of rows at a time."""
    one, two = checkpoint.entry(first), checkpoint.entry(second)
    if one.dtype != two.dtype or one.shape != two.shape:
        return False
    first_file = checkpoint.files[checkpoint.weight_map[first]]
    second_file = checkpoint.files[checkpoint.weight_map[second]]
    rows, _ = first_file.rows_of(first, row_dim)
    for chunk, twin in zip(first_file.row_chunks(first, row_dim, rows, STATISTICS_CHUNK_ROWS),
                           second_file.row_chunks(second, row_dim, rows, STATISTICS_CHUNK_ROWS)):
        if not torch.equal(chunk.view(torch.uint8), twin.view(torch.uint8)):
            return False
    return True


def meta_model(config: Any) -> Any:
    """The config's model class built on the meta device: names and shapes,
    no weights."""
    cls = model_class(config)
    try:
        with torch.device("meta"):
            if hasattr(cls, "from_config"):  # the Auto classes
                return cls.from_config(config)
            return cls(config)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RuntimeError,
            ZeroDivisionError) as error:
        raise ModelError(f"the config does not build a {getattr(cls, '__name__', cls)} "
                         f"({type(error).__name__}: {first_line(error)}); expected a "
                         "config.json that save_pretrained wrote") from None


def stored_names(vocab_tensor: VocabTensor, checkpoint: Checkpoint, prefix: str) -> List[str]:
    """The names under which the checkpoint stores the tensor: tied copies
    are usually left out; a base model's checkpoint may lack (or add) the
    head's prefix."""
    found = []
    for name in vocab_tensor.names:
        candidates = [name]
        if prefix:
            candidates += [name[len(prefix) + 1:]] if name.startswith(prefix + ".") \
                else [f"{prefix}.{name}"]
        found += [candidate for candidate in candidates if candidate in checkpoint.weight_map]
    return list(dict.fromkeys(found))


@dataclass
class CheckpointTransfer:
    """What transfer_checkpoint did: where it wrote, the token map and plan,
    the tensors it rebuilt, the shards it rewrote and the ones it copied or
    linked whole, and how long each step took."""

    path: Path
    token_map: TokenMap
    plan: InitPlan
    tensors: List[str]
    rewritten: List[str]
    copied: List[str]
    linked: List[str]
    seconds: Dict[str, float] = field(default_factory=dict)

    def weight_files(self) -> str:
        shards = [f"{len(self.rewritten)} rewritten"]
        if self.copied:
            shards.append(f"{len(self.copied)} copied whole")
        if self.linked:
            shards.append(f"{len(self.linked)} hard-linked")
        return ", ".join(shards)

    def __str__(self) -> str:
        return "\n".join([
            str(self.token_map.report), str(self.plan),
            "vocabulary-sized tensors rebuilt: " + ", ".join(self.tensors),
            "weight files: " + self.weight_files(),
            "timings: " + ", ".join(f"{step} {seconds:.2f} s"
                                    for step, seconds in self.seconds.items()),
            f"wrote {self.path}"])


def copy_file(source: Path, target: Path) -> None:
    """A byte copy done by the kernel: copy_file_range shares the blocks on
    file systems that can (btrfs, XFS), else copies in the kernel."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        remaining = os.fstat(reader.fileno()).st_size
        try:
            while remaining:
                copied = os.copy_file_range(reader.fileno(), writer.fileno(), remaining)
                if copied == 0:
                    break
                remaining -= copied
        except (AttributeError, OSError):
            remaining = -1
    if remaining:
        shutil.copyfile(source, target)


def place_whole(source: Path, target: Path, link: bool) -> bool:
    """Copy a file, or hard-link it when asked and possible; True if linked."""
    if link:
        try:
            os.link(source, target)
            return True
        except OSError as error:
            logger.warning("could not hard-link %s (%s); copying it", source, error)
    copy_file(source, target)
    return False


def transfer_checkpoint(model_dir: PathLike, target_tokenizer: VocabSource, out_dir: PathLike,
                        *, source_tokenizer: Optional[VocabSource] = None, init: str = "fvt",
                        mode: str = "exact", device: DeviceLike = None, seed: int = 0,
                        pad_to_multiple_of: Optional[int] = None, overwrite: bool = False,
                        link: bool = False, piece_weights: PieceWeighting = DEFAULT_PIECE_WEIGHTS,
                        output_piece_weights: Optional[PieceWeighting] = None
                        ) -> CheckpointTransfer:
    """Move the checkpoint in `model_dir` (a folder with safetensors weights,
    one file or sharded) to the target tokenizer's vocabulary and write the
    ready folder `out_dir`, without loading the model.

    The vocabulary-sized tensors are the ones the architecture names (its
    model class is built on the meta device and asked, see
    ``architecture.vocab_tensors``); only they are read, rebuilt on
    `device` by the plan transfer_model uses (``init``, ``mode``, ``seed``,
    ``piece_weights``, ``output_piece_weights``),
    in their dtype (bf16 in, bf16 out; matched rows bit-exact), and written
    into rewritten shards. Every other tensor is copied as bytes; a shard
    with no vocabulary-sized tensor is copied whole, or hard-linked with
    ``link`` (then input and output share those files: do not edit them in
    place). The index, the config's vocab_size and special token ids (the
    generation config's too) and the target tokenizer's files are written
    beside them; the folder appears whole or not at all.
    ``source_tokenizer`` defaults to the tokenizer in `model_dir`.

    Raises ModelError for a folder without safetensors weights, a missing
    shard, or a tokenizer that does not fit the embeddings; OutputError for
    an output inside the input; FileExistsError for a non-empty output
    without ``overwrite``; VocabxferError for a bad init, mode or device.
    """
    seconds: Dict[str, float] = {}
    started = time.perf_counter()
    check_seed(seed)
    out_path = check_output_folder(out_dir, overwrite)
    device = resolve_device(device)
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ModelError(f"{model_dir}: no such model folder (expected a folder with "
                         "config.json and safetensors weights)")
    folder = folder.resolve()
    check_apart(out_path, {"the input model folder": folder,
                           "the source tokenizer": input_path(source_tokenizer),
                           "the target tokenizer": input_path(target_tokenizer)})
    check_model_folder(folder, ModelError)
    companions = read_companions(folder)
    checkpoint = open_checkpoint(folder)
    config = load_config(str(folder))
    model = meta_model(config)
    tensors = vocab_tensors(model)
    prefix = getattr(model, "base_model_prefix", "") or ""
    stored = [(vocab_tensor, stored_names(vocab_tensor, checkpoint, prefix))
              for vocab_tensor in tensors]
    if not stored[0][1]:
        raise ModelError(f"{folder}: the checkpoint holds none of "
                         f"{', '.join(tensors[0].names)} (the input embeddings of "
                         f"{type(model).__name__})")
    check_stored_shapes(checkpoint, stored)
    check_ties(checkpoint, stored, config)
    source_rows = checkpoint.entry(stored[0][1][0]).shape[0]

    token_map = match_vocab(source_tokenizer if source_tokenizer is not None else folder,
                            target_tokenizer, mode=mode)
    check_fits(token_map.source, source_rows)
    target_size = target_size_for(token_map, pad_to_multiple_of)
    plan = plan_initialisation(token_map, target_size, init, piece_weights=piece_weights,
                               output_piece_weights=output_piece_weights)
    seconds["match and plan"] = time.perf_counter() - started

    started = time.perf_counter()
    needed = plan.needed_source_ids()
    # Each vocabulary-sized tensor is rebuilt when the first shard that
    # holds it is written and dropped after the last: one rebuilt tensor
    # (and the source rows it needs) in memory at a time.
    job_of: Dict[str, int] = {}
    for number, (_, names) in enumerate(stored):
        job_of.update(dict.fromkeys(names, number))
    last_shard = {job_of[name]: shard for shard, file in checkpoint.files.items()
                  for name in safetensors_io.in_file_order(file) if name in job_of}
    tokenizer = as_transformers_tokenizer(with_source_limit(token_map.target, token_map.source))
    generation_config = read_generation_config(folder)
    update_config(config, generation_config, token_map.target, target_size)
    placed: Dict[str, List[str]] = {"rewritten": [], "copied": [], "linked": []}

    def write(staging: Path) -> None:
        placed.update(rewritten=[], copied=[], linked=[])
        data_bytes, new_sizes = 0, {}
        held: Dict[int, torch.Tensor] = {}
        for shard, file in checkpoint.files.items():
            names = safetensors_io.in_file_order(file)
            jobs = [job_of[name] for name in names if name in job_of]
            if not jobs:
                linked = place_whole(file.path, staging / shard, link)
                placed["linked" if linked else "copied"].append(shard)
                data_bytes += sum(entry.size for entry in file.entries.values())
                continue
            for job in jobs:
                if job not in held:
                    vocab_tensor, job_names = stored[job]
                    held[job] = rebuild(checkpoint, job_names[0], vocab_tensor, plan, needed,
                                        tensor_generator(seed, job), device)
                    new_sizes.update(dict.fromkeys(job_names, held[job].numel()))
            data_bytes += safetensors_io.write(
                staging / shard,
                [(name, held[job_of[name]] if name in job_of else (file, name))
                 for name in names], file.metadata)
            placed["rewritten"].append(shard)
            for job in set(jobs):
                if last_shard[job] == shard:
                    del held[job]
        if checkpoint.index is not None:
            write_index(staging / INDEX_FILE, checkpoint, new_sizes, data_bytes)
        config.save_pretrained(str(staging))
        if generation_config is not None:
            generation_config.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        copy_companions(companions, staging)

    path = write_folder(out_path, write, overwrite=overwrite)
    seconds["rebuild and write"] = time.perf_counter() - started
    return CheckpointTransfer(
        path=path, token_map=token_map, plan=plan,
        tensors=[name for vocab_tensor, names in stored for name in names],
        rewritten=placed["rewritten"], copied=placed["copied"], linked=placed["linked"],
        seconds=seconds)


def rebuild(checkpoint: Checkpoint, name: str, vocab_tensor: VocabTensor, plan: InitPlan,
            needed: torch.Tensor, generator: torch.Generator,
            device: Optional[torch.device]) -> torch.Tensor:
    """One vocabulary-sized tensor rebuilt from the rows the plan needs (and,
    where it needs them, statistics of all rows, read in chunks): the rest
    of the source tensor never enters memory. Equal, bit for bit, to
    model.refill on the whole tensor."""
    file = checkpoint.files[checkpoint.weight_map[name]]
    vector = len(vocab_tensor.shape) == 1 or vocab_tensor.row_dim == 1
    rows = file.read_rows(name, vocab_tensor.row_dim, needed)
    statistics = None
    if plan.needs_statistics():
        chunks = file.row_chunks(name, vocab_tensor.row_dim, len(plan.token_map.source),
                                 STATISTICS_CHUNK_ROWS)
        statistics = row_statistics(chunks, plan.needs_std())
    if device is not None:
        rows = rows.to(device)
    new = plan.apply(rows[:, 0] if vector else rows, generator=generator, rows_held=needed,
                     statistics=statistics, output_layer=vocab_tensor.is_output)
    return as_stored(new, vocab_tensor).cpu()


def read_generation_config(folder: Path) -> Any:
    if not (folder / "generation_config.json").is_file():
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise ModelError(f"{folder / 'generation_config.json'}: could not be read "
                         f"({type(error).__name__}: {error})") from None


def write_index(path: Path, checkpoint: Checkpoint, new_sizes: Dict[str, int],
                data_bytes: int) -> None:
    """The index of the new shards: the same names in the same files, the
    new total size (and parameter count, where the source recorded one)."""
    index = dict(checkpoint.index)
    metadata = dict(index.get("metadata") or {})
    metadata["total_size"] = data_bytes
    if isinstance(metadata.get("total_parameters"), int):
        # Changed by what the rebuilt tensors gained or lost, so that the
        # source's own way of counting (buffers or not) is kept.
        metadata["total_parameters"] += sum(
            numel - _numel(checkpoint.entry(name).shape) for name, numel in new_sizes.items())
    index["metadata"] = metadata
    index["weight_map"] = dict(checkpoint.weight_map)
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _numel(shape: Tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
