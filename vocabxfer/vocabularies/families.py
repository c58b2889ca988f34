"""Tokenizer families and the family-neutral form of a token.

A token string means different things in different families: WordPiece marks
a continuation with ``##``, SentencePiece marks a word start with ``▁`` and
spells raw bytes ``<0xNN>``, byte-level BPE (GPT-2) writes every byte as a
printable character, ``Ġ`` for the space that starts a word. This module
turns a token into a *kind* and a *text* that mean the same across families.
"""

import re
import unicodedata
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

WORDPIECE = "wordpiece"
SENTENCEPIECE = "sentencepiece"
BYTELEVEL = "bytelevel"
WORDLEVEL = "wordlevel"
UNKNOWN = "unknown"
FAMILIES = (WORDPIECE, SENTENCEPIECE, BYTELEVEL, WORDLEVEL, UNKNOWN)

# Kinds of token, as reported and as used in canonical keys.
SPECIAL = "special"
WORD_START = "word-start"
CONTINUATION = "continuation"
BYTE = "byte"
OTHER = "other"
KINDS = (SPECIAL, WORD_START, CONTINUATION, BYTE, OTHER)

SENTENCEPIECE_SPACE = "\u2581"  # ▁
BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")

ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
# Well-known special strings, for sources that do not name their roles.
ROLE_OF_STRING = {
    "[PAD]": "pad", "<pad>": "pad", "[UNK]": "unk", "<unk>": "unk", "[CLS]": "cls",
    "[SEP]": "sep", "[MASK]": "mask", "<mask>": "mask", "<s>": "bos", "</s>": "eos",
    "<|endoftext|>": "eos", "<|begin_of_text|>": "bos", "<|end_of_text|>": "eos",
}
# A role a tokenizer lacks may be played by another: RoBERTa's <s> is both the
# beginning of a sequence and its classification token.
ROLE_STAND_INS = {"cls": "bos", "sep": "eos", "bos": "cls", "eos": "sep"}


@lru_cache(maxsize=1)
def byte_to_unicode() -> Dict[int, str]:
    """GPT-2's printable alphabet for bytes: printable Latin-1 bytes stand for
    themselves, every other byte for the next unused code point from 256."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {byte: chr(byte) for byte in printable}
    next_code_point = 256
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(next_code_point)
            next_code_point += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_byte() -> Dict[str, int]:
    return {char: byte for byte, char in byte_to_unicode().items()}


def decode_byte_level(token: str) -> Optional[bytes]:
    """The bytes a byte-level token stands for, or None when the token holds
    a character outside the byte alphabet (an added token, say)."""
    table = unicode_to_byte()
    try:
        return bytes(table[char] for char in token)
    except KeyError:
        return None


def classify(token: str, family: str, continuation_prefix: str = "##") -> Tuple[str, object]:
    """(kind, text) of a non-special token in its family. text is a str, or
    bytes for a BYTE token (a raw byte, or bytes that are not whole UTF-8)."""
    if family == WORDPIECE:
        if continuation_prefix and token.startswith(continuation_prefix) and \
                len(token) > len(continuation_prefix):
            return CONTINUATION, token[len(continuation_prefix):]
        return WORD_START, token
    if family == SENTENCEPIECE:
        if token.startswith(SENTENCEPIECE_SPACE):
            return WORD_START, token[1:]
        match = BYTE_FALLBACK.fullmatch(token)
        if match:
            return BYTE, bytes([int(match.group(1), 16)])
        return CONTINUATION, token
    if family == BYTELEVEL:
        raw = decode_byte_level(token)
        if raw is None:
            return OTHER, token
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BYTE, raw
        if text.startswith(" ") and len(text) > 1:
            return WORD_START, text[1:]
        return CONTINUATION, text
    return OTHER, token


def strip_accents(text: str) -> str:
    return "".join(char for char in unicodedata.normalize("NFD", text)
                   if unicodedata.category(char) != "Mn")


def normalise(text: str, casefold: bool, remove_accents: bool) -> str:
    """Unicode NFC, then the case folding and accent stripping an uncased
    tokenizer applies to its input."""
    if remove_accents:
        text = strip_accents(text)
    if casefold:
        text = text.casefold()
    return unicodedata.normalize("NFC", text)


def guess_family_from_tokens(tokens: List[str]) -> str:
    """Last resort for a bare {token: id} mapping: the marker most tokens
    carry. Real tokenizers are recognised from their configuration instead."""
    sample = tokens[:: max(1, len(tokens) // 5000)]
    counts = {
        WORDPIECE: sum(token.startswith("##") for token in sample),
        SENTENCEPIECE: sum(token.startswith(SENTENCEPIECE_SPACE) for token in sample),
        BYTELEVEL: sum(token.startswith("\u0120") for token in sample),  # Ġ
    }
    family, count = max(counts.items(), key=lambda item: item[1])
    return family if count >= max(1, len(sample) // 100) else UNKNOWN


def model_input_names(family: str) -> List[str]:
    """What a tokenizer of the family hands the model: BERT-style (WordPiece)
    models take segment ids, the others do not."""
    if family == WORDPIECE:
        return ["input_ids", "token_type_ids", "attention_mask"]
    return ["input_ids", "attention_mask"]
