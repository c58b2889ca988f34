"""Move a whole transformers model, in memory, to the target vocabulary."""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from vocabxfer.models.architecture import VocabTensor, vocab_tensors
from vocabxfer.models.devices import DeviceLike, resolve_device
from vocabxfer.errors import ModelError, VocabxferError
from vocabxfer.initialisation.fvt import DEFAULT_PIECE_WEIGHTS, PieceWeighting
from vocabxfer.initialisation.plan import InitPlan, plan_initialisation
from vocabxfer.vocabularies.matching import TokenMap, match_vocab
from vocabxfer.vocabularies.readers import VocabSource
from vocabxfer.vocabularies.vocab import Vocab

logger = logging.getLogger(__name__)

CONFIG_ROLES = ("pad", "bos", "eos", "sep", "cls", "mask", "unk")
GENERATION_ROLES = ("pad", "bos", "eos")


@dataclass
class ModelTransfer:
    """What transfer_model did: the model (changed in place), the token map,
    the initialisation plan, the tensors it refilled, and how long each
    step took."""

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


def check_fits(vocab: Vocab, rows: int, *, which: str = "source",
               embeddings: str = "the model's input embeddings", op: str = "") -> None:
    """A tokenizer must be its model's: no more tokens than embedding rows.
    `op` prefixes the message with the caller's name (``"refine: "``)."""
    if len(vocab) > rows:
        raise ModelError(
            f"{op}the {which} tokenizer {vocab.name} has {len(vocab):,} tokens but {embeddings} "
            f"have {rows:,} rows; is it this model's tokenizer?")


def target_size_for(token_map: TokenMap, pad_to_multiple_of: Optional[int]) -> int:
    size = len(token_map.target)
    if pad_to_multiple_of:
        size = -(-size // pad_to_multiple_of) * pad_to_multiple_of
    return size


def plan_rows(source_rows: torch.Tensor, vocab_tensor: VocabTensor) -> torch.Tensor:
    """The tensor as the plan sees it: rows over the vocabulary first."""
    return source_rows[0] if vocab_tensor.row_dim == 1 else source_rows


def as_stored(refilled: torch.Tensor, vocab_tensor: VocabTensor) -> torch.Tensor:
    return refilled[None] if vocab_tensor.row_dim == 1 else refilled


def check_seed(seed: Any, op: str = "") -> None:
    """A seed torch's generators take: an int in [0, 2**63)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise VocabxferError(f"{op}seed must be an int in [0, 2**63), got {seed!r}")


def tensor_generator(seed: int, number: int) -> torch.Generator:
    """The generator of the sampled rules for the `number`-th vocabulary-
    sized tensor: each tensor draws its own stream, so that a reader that
    rebuilds them in another order (checkpoints/streamed.py) draws the same rows."""
    return torch.Generator().manual_seed(seed + number)


def refill(plan: InitPlan, tensor: torch.Tensor, vocab_tensor: VocabTensor,
           generator: torch.Generator) -> torch.Tensor:
    """The plan applied to one vocabulary-sized tensor, in its dtype."""
    return as_stored(plan.apply(plan_rows(tensor, vocab_tensor), generator=generator,
                                output_layer=vocab_tensor.is_output), vocab_tensor)


def set_tensor(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put `tensor` (a Parameter, or a plain tensor for a buffer) where
    `name` points; the module's own __setattr__ keeps a buffer a buffer."""
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    setattr(module, attribute, tensor)


def update_module_sizes(model: Any, rows: int) -> None:
    embeddings = model.get_input_embeddings()
    embeddings.num_embeddings = rows
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if isinstance(output, torch.nn.Linear):
        output.out_features = rows


def update_config(config: Any, generation_config: Any, target: Vocab, target_size: int) -> None:
    """vocab_size and every special token id follow the target vocabulary."""
    if config is None:
        return
    config.vocab_size = target_size
    for role in CONFIG_ROLES:
        attribute = f"{role}_token_id"
        token_id = target.id_of_role(role)
        if token_id is not None:
            if hasattr(config, attribute) or role in GENERATION_ROLES:
                setattr(config, attribute, token_id)
        elif getattr(config, attribute, None) is not None:
            logger.warning("the target tokenizer has no %s token; config.%s is set to None",
                           role, attribute)
            setattr(config, attribute, None)
    if generation_config is not None:
        for role in GENERATION_ROLES:
            if hasattr(generation_config, f"{role}_token_id"):
                setattr(generation_config, f"{role}_token_id", target.id_of_role(role))


def transfer_model(model: Any, source_tokenizer: VocabSource, target_tokenizer: VocabSource,
                   init: str = "fvt", *, mode: str = "exact", device: DeviceLike = None,
                   seed: int = 0, pad_to_multiple_of: Optional[int] = None,
                   piece_weights: PieceWeighting = DEFAULT_PIECE_WEIGHTS,
                   output_piece_weights: Optional[PieceWeighting] = None) -> ModelTransfer:
    """Move `model` (a transformers model, changed in place) from the source
    tokenizer's vocabulary to the target's.

    The vocabulary-sized tensors the architecture names (see
    ``architecture.vocab_tensors``: input embeddings, an untied output layer
    and its bias such as BERT's ``cls.predictions.bias``, BART's
    ``final_logits_bias``) are rebuilt by one plan (see
    ``plan_initialisation``, which also explains ``piece_weights`` and
    ``output_piece_weights``), in their dtype; tied weights stay tied. The
    embedding modules' sizes, ``config.vocab_size``, the special token ids
    and the embedding's ``padding_idx`` follow. ``device`` is where the work
    runs (the model is moved there).

    Raises ModelError for a model without input embeddings or a source
    tokenizer larger than the embeddings, VocabxferError for a bad init,
    mode or device, VocabError for an unreadable tokenizer.
    """
    check_seed(seed)
    device = resolve_device(device)
    seconds: Dict[str, float] = {}
    started = time.perf_counter()
    tensors = vocab_tensors(model)
    if device is not None:
        model.to(device)
    embeddings = model.get_input_embeddings()
    source_rows = embeddings.weight.shape[0]
    token_map = match_vocab(source_tokenizer, target_tokenizer, mode=mode)
    check_fits(token_map.source, source_rows)
    seconds["match"] = time.perf_counter() - started

    started = time.perf_counter()
    target_size = target_size_for(token_map, pad_to_multiple_of)
    plan = plan_initialisation(token_map, target_size, init, piece_weights=piece_weights,
                               output_piece_weights=output_piece_weights)
    seconds["plan"] = time.perf_counter() - started

    started = time.perf_counter()
    current = dict(model.named_parameters(remove_duplicate=False))
    current.update(model.named_buffers(remove_duplicate=False))
    for number, vocab_tensor in enumerate(tensors):
        old = current[vocab_tensor.name]
        new = refill(plan, old, vocab_tensor, tensor_generator(seed, number))
        if not vocab_tensor.is_buffer:
            new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
        # One new tensor for every name: tied weights stay tied.
        for name in vocab_tensor.names:
            set_tensor(model, name, new)
    update_module_sizes(model, target_size)
    if embeddings.padding_idx is not None:
        embeddings.padding_idx = token_map.target.id_of_role("pad")
    update_config(getattr(model, "config", None), getattr(model, "generation_config", None),
                  token_map.target, target_size)
    seconds["fill"] = time.perf_counter() - started
    return ModelTransfer(model=model, token_map=token_map, plan=plan,
                         tensors=[name for t in tensors for name in t.names], seconds=seconds)
