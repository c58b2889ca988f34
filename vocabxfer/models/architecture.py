"""Which tensors of a transformers model are vocabulary-sized, by what the
architecture says: its input and output embeddings (tied or not), the
output layer's bias (BERT's ``cls.predictions.bias``), and BART's
``final_logits_bias`` buffer. Works on a model built on the meta device,
which holds no weights.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch

from vocabxfer.errors import ModelError

# Vocabulary-sized tensors that get_input_embeddings/get_output_embeddings
# do not return, by the attribute name transformers gives them: a buffer of
# shape (1, vocab) added to the logits (BART, mBART, Marian, Pegasus).
LOGITS_BIAS_BUFFER = "final_logits_bias"


@dataclass(frozen=True)
class VocabTensor:
    """One vocabulary-sized tensor: every name it goes by (tied weights
    share one tensor), what it is, and whether it is a buffer. ``row_dim``
    is the dimension that runs over the vocabulary."""

    names: Tuple[str, ...]
    role: str
    is_buffer: bool
    row_dim: int
    shape: Tuple[int, ...]

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def is_output(self) -> bool:
        """Part of the output layer (its weight or a bias), not the input
        embeddings (tied output layers are the input embeddings)."""
        return not self.role.startswith("input embeddings")


def _names_by_tensor(model: torch.nn.Module) -> Dict[int, List[str]]:
    names: Dict[int, List[str]] = {}
    for name, tensor in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(tensor), []).append(name)
    for name, tensor in model.named_buffers(remove_duplicate=False):
        names.setdefault(id(tensor), []).append(name)
    return names


def declared_ties(model: Any) -> List[Tuple[str, str]]:
    """(tied name, source name) pairs the architecture declares in
    ``_tied_weights_keys`` (a dict in transformers 5; a list of tied names,
    with no source, in transformers 4)."""
    keys = getattr(model, "_tied_weights_keys", None) or {}
    if isinstance(keys, dict):
        return [(str(tied), str(source)) for tied, source in keys.items()]
    return [(str(tied), "") for tied in keys]


def vocab_tensors(model: Any) -> List[VocabTensor]:
    """The model's vocabulary-sized tensors, each once, input embeddings
    first. Raises ModelError for a model without input embeddings."""
    get_input = getattr(model, "get_input_embeddings", None)
    embeddings = get_input() if callable(get_input) else None
    if not isinstance(embeddings, torch.nn.Embedding):
        raise ModelError(f"the model ({type(model).__name__}) has no input embeddings "
                         "(get_input_embeddings() gave no nn.Embedding); expected a "
                         "transformers language model")
    rows = embeddings.weight.shape[0]
    found: List[Tuple[torch.Tensor, str, int]] = [(embeddings.weight, "input embeddings", 0)]
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if isinstance(output, torch.nn.Linear):
        found.append((output.weight, "output embeddings", 0))
        if output.bias is not None:
            found.append((output.bias, "output bias", 0))
    logits_bias = getattr(model, LOGITS_BIAS_BUFFER, None)
    if isinstance(logits_bias, torch.Tensor) and logits_bias.dim() == 2:
        found.append((logits_bias, "logits bias", 1))

    names = _names_by_tensor(model)
    by_name = dict(model.named_parameters(remove_duplicate=False))
    by_name.update(model.named_buffers(remove_duplicate=False))
    # Tensors the architecture ties to one of these, but which are separate
    # objects here (ties it applies only with tie_word_embeddings, say):
    # BERT's cls.predictions.bias beside an untied decoder bias, T5's
    # encoder.embed_tokens beside an untied shared.
    role_of = {name: role for tensor, role, _ in found for name in names.get(id(tensor), [])}
    for tied, source in declared_ties(model):
        for name, other in ((tied, source), (source, tied)):
            tensor = by_name.get(other)
            if name in role_of and tensor is not None and tensor.dim() in (1, 2):
                found.append((tensor, f"{role_of[name]} (twin of {name})", 0))
    buffers = {id(tensor) for _, tensor in model.named_buffers(remove_duplicate=False)}
    result: List[VocabTensor] = []
    seen = set()
    for tensor, role, row_dim in found:
        if id(tensor) in seen:
            continue  # tied to one already listed
        seen.add(id(tensor))
        if tensor.shape[row_dim] != rows:
            raise ModelError(f"{names.get(id(tensor), [role])[0]} has shape "
                             f"{tuple(tensor.shape)}, but the input embeddings have {rows} "
                             f"rows; expected dimension {row_dim} to match")
        result.append(VocabTensor(names=tuple(names.get(id(tensor), [role])), role=role,
                                  is_buffer=id(tensor) in buffers, row_dim=row_dim,
                                  shape=tuple(tensor.shape)))
    return result
