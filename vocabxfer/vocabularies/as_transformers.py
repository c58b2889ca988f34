"""A vocabulary's tokenizer as a transformers fast tokenizer: what a saved
folder holds for AutoTokenizer, and what reads passages into token ids and
character offsets during refinement and measurement."""

from typing import Any

from vocabxfer.errors import VocabError
from vocabxfer.vocabularies import families
from vocabxfer.vocabularies.readers import VocabSource, load_vocab


def as_transformers_tokenizer(tokenizer: VocabSource) -> Any:
    """A transformers fast tokenizer for whatever the tokenizer is: a
    transformers tokenizer as it is, a ``tokenizers.Tokenizer`` (or a file
    or folder holding one) wrapped with its special tokens by role and the
    settings its folder holds (the chat template, length limit, sides)."""
    vocab = load_vocab(tokenizer)
    original = vocab.tokenizer
    if original is not None and hasattr(original, "save_pretrained"):
        return original
    if original is None:
        raise VocabError(f"{vocab.name}: a {vocab.family} vocabulary without its tokenizer "
                         "cannot be saved as a tokenizer; pass the tokenizer itself (a folder, "
                         "tokenizer.json or tokenizer object)")
    from transformers import PreTrainedTokenizerFast

    roles = {f"{role}_token": token for role, token in vocab.special_tokens_map.items()
             if role in families.ROLES}
    wrapped = PreTrainedTokenizerFast(tokenizer_object=original, **roles, **vocab.settings)
    wrapped.model_input_names = families.model_input_names(vocab.family)
    return wrapped
