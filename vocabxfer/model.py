"""Move a whole transformers model to the target vocabulary, and write it as
a folder that transformers loads as it is."""

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from . import families
from .initialise import InitPlan, apply_plan, plan_initialisation
from .matching import TokenMap, match_vocab
from .vocab import Vocab, VocabSource, load_vocab

logger = logging.getLogger(__name__)


class ModelError(ValueError):
    """The model cannot be transferred as asked: the message says why."""


@dataclass
class ModelTransfer:
    """What transfer_model did: the model (changed in place), the token map,
    the initialisation plan, the tensors it refilled, and timings."""

    model: Any
    token_map: TokenMap
    plan: InitPlan
    tensors: List[str]
    seconds: Dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [str(self.token_map.report), str(self.plan),
                 "vocabulary-sized tensors refilled: " + ", ".join(self.tensors)]
        lines.append("timings: " + ", ".join(f"{step} {seconds:.2f} s"
                                             for step, seconds in self.seconds.items()))
        return "\n".join(lines)


def vocab_sized_parameters(model: torch.nn.Module,
                           rows: int) -> Dict[int, Tuple[torch.nn.Parameter, List[str]]]:
    """Every distinct parameter whose first dimension is `rows`, by id, with
    all the names it goes by (tied weights share one parameter)."""
    found: Dict[int, Tuple[torch.nn.Parameter, List[str]]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if parameter.dim() in (1, 2) and parameter.shape[0] == rows:
            found.setdefault(id(parameter), (parameter, []))[1].append(name)
    return found


def replace_parameters(model: torch.nn.Module, replacements: Dict[int, torch.nn.Parameter],
                       new_rows: int) -> None:
    """Swap old parameters for new ones wherever they are registered, so that
    tied weights stay tied, and update the modules' size attributes."""
    for module in model.modules():
        for key, parameter in list(module._parameters.items()):
            if parameter is not None and id(parameter) in replacements:
                module._parameters[key] = replacements[id(parameter)]
                if isinstance(module, torch.nn.Embedding) and key == "weight":
                    module.num_embeddings = new_rows
                elif isinstance(module, torch.nn.Linear) and key == "weight":
                    module.out_features = new_rows


def update_config(model: Any, target: Vocab, target_size: int) -> None:
    config = getattr(model, "config", None)
    if config is None:
        return
    config.vocab_size = target_size
    for role in ("pad", "bos", "eos", "sep", "cls", "mask", "unk"):
        attribute = f"{role}_token_id"
        token = target.specials.get(role)
        if token is not None and token in target.ids:
            if hasattr(config, attribute) or role in ("pad", "bos", "eos"):
                setattr(config, attribute, target.ids[token])
        elif getattr(config, attribute, None) is not None:
            logger.warning("the target tokenizer has no %s token; config.%s is set to None",
                           role, attribute)
            setattr(config, attribute, None)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        for role in ("pad", "bos", "eos"):
            token = target.specials.get(role)
            if hasattr(generation, f"{role}_token_id"):
                setattr(generation, f"{role}_token_id",
                        target.ids[token] if token in target.ids else None)


def transfer_model(model: Any, source_tokenizer: VocabSource, target_tokenizer: VocabSource,
                   init: str = "fvt", *, mode: str = "exact",
                   device: Union[str, torch.device, None] = None, seed: int = 0,
                   pad_to_multiple_of: Optional[int] = None) -> ModelTransfer:
    """Move `model` (a transformers model, changed in place) from the source
    tokenizer's vocabulary to the target's.

    Every parameter whose first dimension is the source embedding's row
    count is rebuilt by one plan (see ``plan_initialisation``): the input
    embeddings, an untied output layer and its bias (BERT's
    ``cls.predictions.bias``, say); tied weights stay tied. The embedding
    modules' sizes, ``config.vocab_size`` and the special token ids follow.
    ``device`` is where the work runs (the model is moved there).

    Raises ModelError for a model without input embeddings or a source
    tokenizer larger than the embeddings, ValueError for a bad init or mode,
    VocabError for an unreadable tokenizer.
    """
    seconds: Dict[str, float] = {}
    started = time.perf_counter()
    if device is not None:
        model.to(device)
    get_input = getattr(model, "get_input_embeddings", None)
    embeddings = get_input() if callable(get_input) else None
    if not isinstance(embeddings, torch.nn.Embedding):
        raise ModelError(f"the model ({type(model).__name__}) has no input embeddings "
                         "(get_input_embeddings() gave no nn.Embedding); expected a "
                         "transformers language model")
    source_rows = embeddings.weight.shape[0]
    token_map = match_vocab(source_tokenizer, target_tokenizer, mode=mode)
    if len(token_map.source) > source_rows:
        raise ModelError(
            f"the source tokenizer {token_map.source.name} has {len(token_map.source):,} tokens "
            f"but the model's input embeddings have {source_rows:,} rows; is it this model's "
            "tokenizer?")
    seconds["match"] = time.perf_counter() - started

    target_size = len(token_map.target)
    if pad_to_multiple_of:
        target_size = -(-target_size // pad_to_multiple_of) * pad_to_multiple_of
    plan = plan_initialisation(token_map, target_size, init)
    seconds["plan"] = plan.seconds["plan"]

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    replacements: Dict[int, torch.nn.Parameter] = {}
    names: List[str] = []
    for parameter_id, (parameter, parameter_names) in vocab_sized_parameters(
            model, source_rows).items():
        refilled = apply_plan(plan, parameter, generator=generator)
        replacements[parameter_id] = torch.nn.Parameter(refilled,
                                                        requires_grad=parameter.requires_grad)
        names += parameter_names
    replace_parameters(model, replacements, target_size)
    pad = token_map.target.specials.get("pad")
    if embeddings.padding_idx is not None:
        embeddings.padding_idx = token_map.target.ids.get(pad) if pad else None
    update_config(model, token_map.target, target_size)
    seconds["fill"] = time.perf_counter() - started
    return ModelTransfer(model=model, token_map=token_map, plan=plan, tensors=names,
                         seconds=seconds)


# ---- writing the folder ----------------------------------------------------

def as_transformers_tokenizer(tokenizer: VocabSource) -> Any:
    """A transformers fast tokenizer for whatever the target tokenizer is, so
    that AutoTokenizer can load what we save."""
    vocab = load_vocab(tokenizer)
    original = vocab.tokenizer
    if original is not None and hasattr(original, "save_pretrained"):
        return original
    from transformers import PreTrainedTokenizerFast

    backend = original
    if backend is None:
        from .fvt import source_backend
        backend = source_backend(vocab)
    roles = {f"{role}_token": token for role, token in vocab.specials.items()
             if role in families.ROLES}
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, **roles)
    wrapped.model_input_names = families.model_input_names(vocab.family)
    return wrapped


def check_output_folder(out_dir: Path, overwrite: bool,
                        flag: str = "overwrite=True (--force)") -> None:
    """Refuse an output path that is a file, or a non-empty folder unless
    `overwrite`; `flag` names the switch that allows it, in the message."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose another output path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass {flag} to replace it, "
                              "or choose another folder")


def write_atomically(out_dir: Union[str, os.PathLike], overwrite: bool, write) -> Path:
    """Run `write(folder)` into a temporary folder beside `out_dir`, then
    rename it into place; on any failure nothing is left behind and an
    existing `out_dir` is untouched."""
    out_dir = Path(out_dir).expanduser().resolve()
    check_output_folder(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    # mkdtemp makes the folder private (0700); the result should have the
    # permissions any folder made here would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        write(staging)
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, retired / "old")
            os.rename(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def save_tokenizer(tokenizer: VocabSource, out_dir: Union[str, os.PathLike], *,
                   overwrite: bool = False) -> Path:
    """Write a tokenizer folder that AutoTokenizer loads, atomically."""
    wrapped = as_transformers_tokenizer(tokenizer)
    return write_atomically(out_dir, overwrite, lambda folder: wrapped.save_pretrained(str(folder)))


def save(model: Any, target_tokenizer: VocabSource, out_dir: Union[str, os.PathLike],
         *, overwrite: bool = False) -> Path:
    """Write `model` (safetensors + config) and the target tokenizer to
    `out_dir`, so that ``AutoModel.from_pretrained(out_dir)`` and
    ``AutoTokenizer.from_pretrained(out_dir)`` load it offline.

    The folder is written under a temporary name beside it and renamed at the
    end: an interrupted save leaves no half-written folder. An existing
    non-empty folder is replaced only with ``overwrite=True``, and only once
    the new one is complete. Raises FileExistsError otherwise.
    """
    tokenizer = as_transformers_tokenizer(target_tokenizer)

    def write(folder: Path) -> None:
        model.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))

    return write_atomically(out_dir, overwrite, write)
