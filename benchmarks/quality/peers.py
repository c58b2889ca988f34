"""The real peers, run from their own packages, for the evaluation scripts:
mergekit's tokensurgeon (PyPI mergekit, in the bench extra), its
`build_embedding_matrix` called in-process with the subword method, as its
command line `mergekit-tokensurgeon --approximation-method subword
--subword-method mean|weighted_mean` would (prefix and byte matching off,
its defaults). Nothing here reimplements it.
"""

import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

import vocabxfer
from vocabxfer.vocabularies.as_transformers import as_transformers_tokenizer


def available() -> bool:
    try:
        import mergekit.scripts.tokensurgeon  # noqa: F401
    except ImportError:
        return False
    return True


def mergekit_embeddings(model_dir: str, target_tokenizer: Any, source_rows: torch.Tensor,
                        subword_method: str) -> torch.Tensor:
    """The target's input embedding matrix as mergekit builds it from the
    source model's rows: exact matches of its normalised tokens copied,
    every other token approximated from its source subwords."""
    import transformers
    from mergekit.common import ModelReference
    from mergekit.scripts import tokensurgeon
    from mergekit.tokenizer.normalization import normalized_vocabulary
    from mergekit.tokensurgeon.subword import SubwordMethod

    logging.getLogger("mergekit").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        target_dir = Path(scratch) / "target"
        as_transformers_tokenizer(target_tokenizer).save_pretrained(str(target_dir))
        options = tokensurgeon.TokenSurgeonOptions(
            model=ModelReference.model_validate(str(model_dir)),
            donor=ModelReference.model_validate(str(target_dir)),
            out_path=str(Path(scratch) / "unused"),
            method=tokensurgeon.ApproximationMethod.SUBWORD,
            subword_method=SubwordMethod(subword_method))
        source_vocab = normalized_vocabulary(transformers.AutoTokenizer.from_pretrained(
            str(model_dir)))
        target_vocab = normalized_vocabulary(transformers.AutoTokenizer.from_pretrained(
            str(target_dir)))
        rows = max(len(target_vocab), max(target_vocab.values()) + 1)
        return tokensurgeon.build_embedding_matrix(
            SimpleNamespace(name="input embeddings"), source_rows.float(),
            torch.zeros(rows, source_rows.shape[1]), orig_vocab=source_vocab,
            donor_vocab=target_vocab, junk_tokens=[], allow_prefix=False, allow_byte=False,
            is_lm_head=False, options=options)


def mergekit_model(teacher: Any, model_dir: str, target_tokenizer: Any,
                   subword_method: str) -> Any:
    """A copy of the teacher resized to the target vocabulary (by
    vocabxfer's transfer_model, so that config and tied weights follow)
    whose input embeddings (and, tied, its output layer) are mergekit's; an
    untied output layer keeps the mean init (the evaluations here use tied or
    headless models)."""
    import copy

    source_rows = teacher.get_input_embeddings().weight.detach()
    rows = mergekit_embeddings(model_dir, target_tokenizer, source_rows, subword_method)
    model = copy.deepcopy(teacher)
    vocabxfer.transfer_model(model, model_dir, target_tokenizer, init="mean")
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight[:len(rows)] = rows.to(weight.dtype)
    return model
