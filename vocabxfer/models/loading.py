"""Loads a transformers model from a local folder (or a hub id where the
network allows), of the architecture its config names, safely: safetensors
where the folder has them, otherwise torch.load(weights_only=True)."""

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Union

from vocabxfer.models.devices import DeviceLike, resolve_device
from vocabxfer.errors import ModelError
from vocabxfer.vocabularies.readers import first_line, looks_like_hub_id
from vocabxfer.checkpoints.untrusted import check_generation_config, check_model_folder, read_config

logger = logging.getLogger(__name__)

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def model_location(name: Union[str, os.PathLike]) -> str:
    """A local folder as an absolute path, a hub id as it is; a path that
    does not exist is named as such (not as a malformed hub id)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise ModelError(f"{name}: is a file; expected a model folder (as save_pretrained "
                         "writes) or a hub id")
    if isinstance(name, str) and looks_like_hub_id(name):
        return name
    raise ModelError(f"{name}: no such model folder (expected a folder with config.json and "
                     "weights, or a hub id)")


def model_class(config: Any) -> Any:
    """The transformers class the config names in ``architectures``, which
    must be a model class; AutoModel when it names none."""
    import transformers

    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        return transformers.AutoModel
    name = architectures[0]
    cls = getattr(transformers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ModelError(f"config.json names the architecture {name!r}, which is not a "
                         "transformers model class; expected one such as BertForMaskedLM")
    return cls


def load_config(location: str) -> Any:
    """The model's config. A local folder is checked first as a stranger's
    (untrusted.py): its links stay inside it, config.json and
    generation_config.json are bounded, well-formed JSON objects whose
    fields the transfer uses have sane types and ranges."""
    from transformers import AutoConfig

    folder = Path(location)
    if folder.is_dir():
        check_model_folder(folder)
        document = read_config(folder)
        vocab_size = document.get("vocab_size")
        check_generation_config(folder, vocab_size if isinstance(vocab_size, int) else None)
    try:
        return AutoConfig.from_pretrained(location)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise ModelError(f"{location}: could not read the model's config "
                         f"({type(error).__name__}: {first_line(error)})") from None


def load_model(name: Union[str, os.PathLike], device: DeviceLike = None, *,
               config: Any = None) -> Any:
    """The model in the folder (or hub id) `name`, on `device`. `config` is
    the model's config as ``load_config`` read it, when the caller already
    did (a transfer reads and checks it once, before any long step); the
    model is built from that config, not from a second reading.

    Raises ModelError for a path that does not exist, a config that names no
    model class, a folder without weights, or a hub id that cannot be
    reached; VocabxferError for a bad device.
    """
    device = resolve_device(device)
    location = model_location(name)
    if config is None:
        config = load_config(location)
    cls = model_class(config)
    options: Dict[str, Any] = {"config": config}
    folder = Path(location)
    if folder.is_dir():
        if any((folder / file).is_file() for file in SAFETENSORS):
            options["use_safetensors"] = True
        elif any((folder / file).is_file() for file in PICKLES):
            logger.warning("%s has no safetensors weights; transformers will read the pickle "
                           "checkpoint with torch.load(weights_only=True)", folder)
        else:
            raise ModelError(f"{folder}: has no weights (expected model.safetensors, a sharded "
                             "model.safetensors.index.json, or pytorch_model.bin)")
    try:
        model = cls.from_pretrained(location, **options)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        # Unreadable files, mismatched shapes, or a pickle that
        # torch.load(weights_only=True) refuses to run.
        raise ModelError(f"{name}: could not load the model ({type(error).__name__}: "
                         f"{first_line(error)})") from None
    return model.to(device) if device is not None else model

