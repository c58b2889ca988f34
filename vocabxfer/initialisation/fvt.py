"""Fast Vocabulary Transfer (Gee et al., 2022): a target token the source
vocabulary lacks starts as the mean of the source embeddings of the pieces
the source tokenizer splits its text into.

The text is split the way the token is used: a word-start token as a word
of its own, a continuation (WordPiece ``##x``, SentencePiece ``x`` without
``▁``, byte-level ``x`` without ``Ġ``) as the middle of a word. Stripping
``##`` and tokenizing the rest as a word, as the reference code does, gives
word-start pieces for a token that never starts a word. A byte token (bytes
that are not whole UTF-8) splits into the source's byte pieces.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from vocabxfer.vocabularies import families
from vocabxfer.errors import VocabError, VocabxferError
from vocabxfer.vocabularies.vocab import Vocab


@dataclass(frozen=True)
class Segments:
    """CSR form of the pieces, as int64 tensors built once: target token
    ``target_ids[s]`` averages the source rows
    ``source_ids[offsets[s]:offsets[s + 1]]``. ``positions`` gives each
    piece's place in its token (0 for the first), for piece weightings."""

    target_ids: torch.Tensor
    offsets: torch.Tensor
    source_ids: torch.Tensor
    positions: torch.Tensor
    unsplittable: Tuple[int, ...]  # target ids whose pieces were all unknown or none

    def __len__(self) -> int:
        return int(self.target_ids.numel())


# How the pieces of a token weigh in its mean: all alike; earlier pieces
# more (n, n-1, ..., 1); later pieces more (1, 2, ..., n); or by the length
# of each piece's text (alike where a piece is a byte fragment, see
# length_weights). A callable gets (position, count, length) tensors, one
# entry per piece, and returns positive weights.
PIECE_WEIGHTS = ("uniform", "first", "last", "length")
PieceWeighting = Union[str, Callable[..., torch.Tensor]]
# "length" had the best fidelity on the validation passages of both corpora
# of benchmarks/eval_quality.py (Python docs, held out: 0.928 against 0.917
# uniform, 0.922 first, 0.903 last; see quality.md), and the best masked-LM
# likelihood for an untied output layer too (eval_output_layer.py), so the
# output layer follows the input embeddings' weighting unless told. For a
# language model's Korean through a byte-level BPE it needs the byte-fragment
# rule of length_weights.
DEFAULT_PIECE_WEIGHTS = "length"


def piece_text_length(token: str, vocab: Vocab) -> int:
    """Characters of a piece's text, without its family's markers (bytes for
    pieces that are not whole UTF-8); at least 1."""
    kind, text = families.classify(token, vocab.family, vocab.continuation_prefix)
    return text_length(text)


def text_length(text) -> int:
    return max(1, len(text))


def length_weights(segments: "Segments", source: Vocab) -> torch.Tensor:
    """"length": each piece by its text's length, except that the pieces of a
    token holding a byte fragment (a raw byte, or bytes that are not whole
    UTF-8) weigh alike. A fragment's length, bytes of part of a character,
    does not compare with a whole piece's characters. On NSMC through
    SmolLM2's byte-level BPE every new Korean token holds one (14,637 of a
    16,000-token BPE), and weighing their pieces alike gave a lower zero-shot
    BPB on the validation passages (0.8176x the source's against 0.8253x;
    eval_lm.py --zero-shot)."""
    kinds_and_texts = [families.classify(source.tokens[piece], source.family,
                                         source.continuation_prefix)
                       for piece in segments.source_ids.tolist()]
    length = torch.tensor([text_length(text) for _, text in kinds_and_texts],
                          dtype=torch.float32)
    fragment = torch.tensor([kind == families.BYTE for kind, _ in kinds_and_texts],
                            dtype=torch.int64)
    counts = segments.offsets.diff()
    token_of_piece = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    fragments_in_token = torch.zeros(counts.numel(), dtype=torch.int64).index_add_(
        0, token_of_piece, fragment)
    return torch.where(fragments_in_token[token_of_piece] > 0, torch.ones_like(length), length)


def piece_weights(segments: "Segments", source: Vocab,
                  weighting: PieceWeighting) -> Optional[torch.Tensor]:
    """One weight per piece of `segments` by `weighting` (None: uniform).

    Raises VocabxferError for an unknown weighting or a callable whose
    weights are not one positive finite number per piece."""
    if weighting == "uniform":
        return None
    counts = segments.offsets.diff()
    count = torch.repeat_interleave(counts, counts)
    position = segments.positions
    if weighting == "first":
        return (count - position).to(torch.float32)
    if weighting == "last":
        return (position + 1).to(torch.float32)
    if weighting == "length":
        return length_weights(segments, source)
    if not callable(weighting):
        raise VocabxferError(f"piece_weights {weighting!r} is not one of "
                             f"{', '.join(PIECE_WEIGHTS)} or a callable")
    length = torch.tensor([piece_text_length(source.tokens[piece], source)
                           for piece in segments.source_ids.tolist()], dtype=torch.int64)
    weights = torch.as_tensor(weighting(position=position, count=count, length=length),
                              dtype=torch.float32)
    if weights.shape != position.shape or not bool(
            (torch.isfinite(weights) & (weights > 0)).all()):
        raise VocabxferError("piece_weights: the callable must return one positive, finite "
                             f"weight per piece ({position.numel()}), got shape "
                             f"{tuple(weights.shape)}")
    return weights


def source_backend(vocab: Vocab) -> Any:
    """The tokenizer that splits text by the source's rules."""
    tokenizer = vocab.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None) or tokenizer
    if backend is None:
        raise VocabError(
            f"fvt: the source vocabulary {vocab.name} came without its tokenizer, and only a "
            "WordPiece vocabulary can be re-tokenized from its tokens alone; pass the source "
            "tokenizer (a folder, tokenizer.json or tokenizer object) instead")
    return backend


def normalise_for(backend: Any, text: str) -> str:
    normalizer = getattr(backend, "normalizer", None)
    return normalizer.normalize_str(text) if normalizer is not None else text


def wordpiece_continuation(text: str, vocab: Vocab) -> List[int]:
    """Greedy longest-match-first WordPiece pieces of `text` in the middle of
    a word: every piece carries the continuation prefix. [] if some part of
    the text has no piece (WordPiece would give [UNK] for the whole word)."""
    ids, prefix, pieces = vocab.ids, vocab.continuation_prefix, []
    start = 0
    while start < len(text):
        end = len(text)
        while end > start and prefix + text[start:end] not in ids:
            end -= 1
        if end == start:
            return []
        pieces.append(ids[prefix + text[start:end]])
        start = end
    return pieces


def is_text(token: str) -> bool:
    """Whether the token is Unicode text (UTF-8 can spell it)."""
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def split_tokens(source: Vocab, target: Vocab, target_ids: Sequence[int]) -> Segments:
    """The source pieces of every target token in `target_ids`."""
    backend = source_backend(source)
    model = getattr(backend, "model", None)
    unknown = {source.ids[token] for token in (source.special_tokens_map.get("unk"),)
               if token in source.ids}
    pieces_of: Dict[int, List[int]] = {}
    # Word-start tokens and tokens of no family go through the full pipeline
    # in one batch call; continuations and bytes need the model alone.
    words: List[Tuple[int, str]] = []
    for target_id in target_ids:
        token = target.tokens[target_id]
        if not is_text(token):
            # A lone surrogate (legal in JSON, not in text): no tokenizer
            # can split it, and no text holds it; it takes the fallback row.
            pieces_of[target_id] = []
            continue
        kind, text = families.classify(token, target.family, target.continuation_prefix)
        if kind == families.CONTINUATION:
            pieces_of[target_id] = continuation_pieces(text, source, backend, model)
        elif kind == families.BYTE:
            pieces_of[target_id] = byte_pieces(text, source, model)
        else:
            words.append((target_id, text))
    if words:
        texts = [(" " + text) if source.family == families.BYTELEVEL else text
                 for _, text in words]
        for (target_id, _), ids in zip(words, encode_words(backend, texts)):
            pieces_of[target_id] = ids

    segment_targets: List[int] = []
    offsets = [0]
    source_ids: List[int] = []
    positions: List[int] = []
    unsplittable: List[int] = []
    for target_id in target_ids:
        ids = [piece for piece in pieces_of[target_id] if piece not in unknown]
        if not ids:
            unsplittable.append(target_id)
            continue
        segment_targets.append(target_id)
        source_ids.extend(ids)
        positions.extend(range(len(ids)))
        offsets.append(len(source_ids))
    as_tensor = lambda values: torch.tensor(values, dtype=torch.int64)  # noqa: E731
    return Segments(target_ids=as_tensor(segment_targets), offsets=as_tensor(offsets),
                    source_ids=as_tensor(source_ids), positions=as_tensor(positions),
                    unsplittable=tuple(unsplittable))


def encode_words(backend: Any, texts: List[str]) -> List[List[int]]:
    """Pieces of each text as a word of its own. A tokenizer.json may switch
    padding on (sentence-transformers pads to 128): the attention mask keeps
    the padding out of the pieces."""
    if hasattr(backend, "encode_batch"):
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        return [[piece for piece, real in zip(encoding.ids, encoding.attention_mask) if real]
                for encoding in encodings]
    batch = backend(texts, add_special_tokens=False)  # a slow transformers tokenizer
    return batch["input_ids"]


def continuation_pieces(text: str, source: Vocab, backend: Any, model: Optional[Any]) -> List[int]:
    if source.family == families.WORDPIECE:
        # Normalise as the source would (lower case, accents), then split
        # greedily with the continuation prefix on every piece.
        normalised = "".join(normalise_for(backend, text).split())
        return wordpiece_continuation(normalised, source)
    if model is not None and source.family == families.SENTENCEPIECE:
        return [token.id for token in model.tokenize(normalise_for(backend, text))]
    if model is not None and source.family == families.BYTELEVEL:
        return byte_pieces(normalise_for(backend, text).encode("utf-8"), source, model)
    return encode_words(backend, [text])[0]


def byte_pieces(raw: bytes, source: Vocab, model: Optional[Any]) -> List[int]:
    """The source pieces of raw bytes: a byte-level source splits their
    spelling with its own merges; a SentencePiece source has <0xNN> pieces."""
    if source.family == families.BYTELEVEL:
        table = families.byte_to_unicode()
        spelled = "".join(table[byte] for byte in raw)
        if model is not None:
            return [token.id for token in model.tokenize(spelled)]
        return [source.ids[spelled]] if spelled in source.ids else []
    if source.family == families.SENTENCEPIECE:
        names = [f"<0x{byte:02X}>" for byte in raw]
        return [source.ids[name] for name in names if name in source.ids]
    return []
