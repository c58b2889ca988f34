"""The passages refinement reads, tokenised once by both tokenizers (their
Rust batch encoders, with offsets) and aligned word by word into index
tensors, so that a step only gathers rows: no tokenising, no Python loop
over words or tokens, and everything on the device the model runs on.

A word is a whitespace-separated run of characters; a token belongs to the
first word its character span overlaps (special tokens and tokens without
text belong to none). Both tokenizations of a passage share its words, so
word w of the source side and word w of the target side are the same text.
"""

import itertools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from vocabxfer.errors import CorpusError, VocabError, VocabxferError
from vocabxfer.vocabularies.as_transformers import as_transformers_tokenizer
from vocabxfer.vocabularies.vocab import Vocab

WORD = re.compile(r"\S+")
# Passages are cut to this many words per token of max_length before any
# tokenising: a word gives at least one token, so the cut never shortens
# what is read, and a passage of 12,000 words costs what one of 128 does.
WORDS_PER_TOKEN = 4
ENCODE_CHUNK = 4096  # passages per encode_batch call: bounded memory for a large pool
PICKS_AHEAD = 32  # steps whose passages are drawn and moved to the device at once
# A half needs a few words to say what it is about (retrieval.py cuts
# held-out passages with the same floor).
MIN_WORDS_PER_HALF = 4
# Where a training passage is cut into a query and its document: at a word
# drawn between these shares of its words, so that queries of many lengths
# are learned, not one cut.
HALF_CUT = (0.3, 0.7)


NON_SPACE = re.compile(r"\S")
# Spaces a tokenizer may read between the characters it keeps, per kept
# character, before the cut stops counting them (a line of 10**6 spaces).
SPACE_ALLOWANCE = 16


def first_words(text: str, count: int) -> str:
    """The text up to the end of its `count`-th word, as written."""
    for number, match in enumerate(WORD.finditer(text), 1):
        if number == count:
            return text[:match.end()]
    return text


def cut_in_half(text: str, share: float = 0.5) -> Optional[Tuple[str, str]]:
    """(the text before its word at `share` of its words, the rest), each
    keeping its own spacing; None when a half would have fewer than
    MIN_WORDS_PER_HALF words."""
    words = list(WORD.finditer(text))
    if len(words) < 2 * MIN_WORDS_PER_HALF:
        return None
    at = min(max(int(len(words) * share), MIN_WORDS_PER_HALF), len(words) - MIN_WORDS_PER_HALF)
    cut = words[at].start()
    return text[:cut].rstrip(), text[cut:]


def longest_token(*vocabs: Vocab) -> int:
    """The most characters any token of these vocabularies spells (markers
    included): the most text one token can cover."""
    return max((len(token) for vocab in vocabs for token in vocab.tokens), default=1)


def within_reach(text: str, words: int, tokens: int, longest: int) -> str:
    """What `tokens` tokens of at most `longest` characters each can reach
    of `text`, cut before any tokenising: at most `words` words, and at most
    ``2 * tokens * longest`` characters that are not white space (twice:
    normalisers may fold several characters into one), with white space
    between them up to SPACE_ALLOWANCE times that in all. A passage with
    no spaces (a line of CJK or of punctuation, megabytes long) otherwise
    reaches the tokenizer whole."""
    text = first_words(text, words)
    budget = 2 * tokens * max(longest, 1)
    if len(text) <= budget:
        return text
    text = text[:budget * SPACE_ALLOWANCE]
    for number, match in enumerate(NON_SPACE.finditer(text), 1):
        if number == budget:
            return text[:match.end()]
    return text


def rust_tokenizer(vocab: Vocab, max_length: int, what: str) -> Any:
    """A private copy of the vocabulary's Rust tokenizer that truncates to
    `max_length` and never pads (a tokenizer.json may switch padding on;
    many byte-level BPEs have no pad token at all)."""
    from tokenizers import Tokenizer

    wrapped = as_transformers_tokenizer(vocab)
    backend = getattr(wrapped, "backend_tokenizer", None)
    if backend is None:
        raise VocabError(f"refine: the {what} tokenizer {vocab.name} is a slow (Python) "
                         "tokenizer, which gives no character offsets; expected a fast "
                         "tokenizer (a tokenizer.json, a folder with one, or a "
                         "tokenizers.Tokenizer)")
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length)
    return backend


def texts_token_words(texts: Sequence[str], token_rows: np.ndarray, token_spans: np.ndarray,
                      special: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(word of each token or -1, words per text) for the tokens of many
    texts at once: token i is text token_rows[i]'s (rows ascending), with
    character span token_spans[i] and special[i] != 0 for a special token.
    No Python loop over tokens: a position is keyed (text, offset) as
    text * stride + offset, so one sorted search serves every text."""
    per_text = [[match.span() for match in WORD.finditer(text)] for text in texts]
    counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(texts))
    spans = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(per_text)),
                        dtype=np.int64, count=2 * int(counts.sum())).reshape(-1, 2)
    stride = max(map(len, texts), default=0) + 2
    first_word = np.concatenate([[0], np.cumsum(counts)])
    word_rows = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    starts, ends = token_spans[:, 0], token_spans[:, 1]
    # The first word that ends after the token starts; the token belongs to
    # it if that word is the token's text's and starts before the token ends.
    word = np.searchsorted(word_rows * stride + spans[:, 1], token_rows * stride + starts,
                           side="right")
    inside = word < first_word[token_rows + 1]
    word_start = spans[np.minimum(word, len(spans) - 1), 0] if len(spans) \
        else np.zeros_like(word)
    belongs = inside & (word_start < ends) & (ends > starts) & (special == 0)
    return np.where(belongs, word - first_word[token_rows], -1), counts


@dataclass
class Side:
    """One tokenizer's reading of every passage of the pool: token ids and
    words, (passages, max_length), padded with id 0 and word -1."""

    ids: torch.Tensor
    words: torch.Tensor
    lengths: torch.Tensor  # tokens per passage (on the CPU)
    word_counts: torch.Tensor  # words the tokens reach per passage (on the CPU)
    # Each token's character span, (passages, max_length, 2), -1 for padding
    # and special tokens: kept on the CPU until both sides are aligned.
    spans: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None  # padding_mask(), kept where batches have one shape

    def to(self, device: torch.device) -> "Side":
        return Side(self.ids.to(device), self.words.to(device), self.lengths, self.word_counts,
                    self.spans, None if self.mask is None else self.mask.to(device))

    def padding_mask(self) -> torch.Tensor:
        """(passages, max_length) bool, on the ids' device: which slots hold a token."""
        return filled_slots(self.lengths, self.ids.shape[1], self.ids.device)

    def select(self, keep: torch.Tensor) -> "Side":
        return Side(self.ids[keep], self.words[keep], self.lengths[keep], self.word_counts[keep],
                    None if self.spans is None else self.spans[keep],
                    None if self.mask is None else self.mask[keep])


def encode_side(backend: Any, texts: List[str], max_length: int) -> Side:
    ids = np.zeros((len(texts), max_length), dtype=np.int64)
    words = np.full((len(texts), max_length), -1, dtype=np.int64)
    spans = np.full((len(texts), max_length, 2), -1, dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    word_counts = np.zeros(len(texts), dtype=np.int64)
    flat = itertools.chain.from_iterable
    for start in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[start:start + ENCODE_CHUNK]
        encodings = backend.encode_batch(chunk, add_special_tokens=True)
        counts = np.fromiter((len(encoding.ids) for encoding in encodings), dtype=np.int64,
                             count=len(chunk))
        total = int(counts.sum())
        # Every token of the chunk in one flat array; no loop over tokens.
        token_ids = np.fromiter(flat(encoding.ids for encoding in encodings), dtype=np.int64,
                                count=total)
        token_spans = np.fromiter(flat(flat(encoding.offsets for encoding in encodings)),
                                  dtype=np.int64, count=2 * total).reshape(-1, 2)
        special = np.fromiter(flat(encoding.special_tokens_mask for encoding in encodings),
                              dtype=np.int64, count=total)
        token_rows = np.repeat(np.arange(len(chunk), dtype=np.int64), counts)
        positions = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        token_word, _ = texts_token_words(chunk, token_rows, token_spans, special)
        rows = start + token_rows
        ids[rows, positions] = token_ids
        words[rows, positions] = token_word
        spans[rows, positions] = np.where((token_word >= 0)[:, None], token_spans, -1)
        lengths[start:start + len(chunk)] = counts
        np.maximum.at(word_counts, rows, token_word + 1)
    return Side(torch.from_numpy(ids), torch.from_numpy(words), torch.from_numpy(lengths),
                torch.from_numpy(word_counts), torch.from_numpy(spans))


def shared_cuts(first: np.ndarray, second: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The finest alignment two tokenizations of a text share: the text is
    cut where both start a token, and a piece of it is kept only if both
    sides read all of it (one side may be truncated earlier). Takes each
    side's token spans for every passage, (passages, tokens, 2), -1 for
    tokens without text; gives each token's piece number, or -1. No Python
    loop over passages: a cut is a (passage, offset) key, passage * stride +
    offset, so that one sort serves every passage."""
    passages = first.shape[0]
    stride = int(max(first.max(initial=0), second.max(initial=0))) + 2
    row = np.arange(passages, dtype=np.int64)[:, None]
    real = [side[..., 0] >= 0 for side in (first, second)]
    cuts = np.intersect1d((row * stride + first[..., 0])[real[0]],
                          (row * stride + second[..., 0])[real[1]])
    closing, has_closing = closing_cuts(first, second, real)
    # Past the closing cut (where the text both sides read ends) nothing is
    # a piece's start; the closing cut itself ends the last piece.
    cut_row = cuts // stride
    keep = ~has_closing[cut_row] | (cuts % stride < closing[cut_row])
    ends = np.flatnonzero(has_closing) * stride + closing[has_closing]
    cuts = np.sort(np.concatenate([cuts[keep], ends]))
    first_cut = np.searchsorted(cuts, np.arange(passages + 1) * stride, side="left")
    cut_count = np.diff(first_cut)

    def pieces(spans: np.ndarray, is_real: np.ndarray) -> np.ndarray:
        keys = row * stride + np.maximum(spans[..., 0], 0)
        number = np.searchsorted(cuts, keys, side="right") - 1 - first_cut[:-1, None]
        return np.where(is_real & (number >= 0) & (number < cut_count[:, None] - 1), number, -1)

    return pieces(first, real[0]), pieces(second, real[1])


def closing_cuts(first: np.ndarray, second: np.ndarray, real: List[np.ndarray]
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """(cut, has one) per passage: where the text both sides read ends. The
    common end if they end together; else the next token start of the side
    that reads further, if none of its tokens crosses the other side's end;
    else none (the last piece is only partly read by one side). Passages
    where a side has no token with text have none."""
    ends = [np.where(is_real, side[..., 1], -1).max(axis=1)
            for side, is_real in zip((first, second), real)]
    both = real[0].any(axis=1) & real[1].any(axis=1)
    closing = np.where(ends[0] == ends[1], ends[0], 0)
    has_closing = both & (ends[0] == ends[1])
    for longer, is_real, mine, other in ((first, real[0], ends[0], ends[1]),
                                         (second, real[1], ends[1], ends[0])):
        end = other[:, None]
        later = is_real & (longer[..., 0] >= end)
        crossing = is_real & ~later & (longer[..., 1] > end)
        ok = both & (mine > other) & later.any(axis=1) & ~crossing.any(axis=1)
        first_later = np.where(later, longer[..., 0], np.iinfo(np.int64).max).min(axis=1)
        closing = np.where(ok, first_later, closing)
        has_closing |= ok
    return closing, has_closing


def align_by_shared_cuts(first: Side, second: Side, specials: bool = False) -> None:
    """Renumber both sides' tokens from words to the pieces of text both
    tokenizations cut alike (shared_cuts): a new token the other side
    splits in three is one piece, its own target, not a third of a word.
    With `specials`, a passage both sides read to the same end also pairs
    its first and last special tokens ([CLS] and [SEP]), whose states a
    mean-pooled sentence embedding counts too."""
    mine, theirs = shared_cuts(first.spans.numpy(), second.spans.numpy())
    first.words = torch.from_numpy(mine)
    second.words = torch.from_numpy(theirs)
    if specials:
        pair_specials(first, second)
    for side in (first, second):
        side.word_counts = side.words.max(dim=1).values.clamp(min=-1) + 1


def pair_specials(first: Side, second: Side) -> None:
    """Pieces for the first and last special tokens of every passage both
    sides read to the same end (the special tokens then see the same text),
    numbered after the passage's other pieces."""
    rows = torch.arange(len(first.ids))
    real = [side.spans[:, :, 0] >= 0 for side in (first, second)]
    ends = [torch.where(is_real, side.spans[:, :, 1], -1).max(dim=1).values
            for side, is_real in zip((first, second), real)]
    same_end = real[0].any(dim=1) & real[1].any(dim=1) & (ends[0] == ends[1])
    next_piece = torch.maximum(first.words.max(dim=1).values, second.words.max(dim=1).values) + 1
    for position in ("first", "last"):
        where = [torch.zeros_like(side.lengths) if position == "first"
                 else (side.lengths - 1).clamp(min=0) for side in (first, second)]
        pairs = same_end.clone()
        for side, at in zip((first, second), where):
            pairs &= (side.spans[rows, at, 0] < 0) & (side.lengths > 1)
        for side, at in zip((first, second), where):
            side.words[rows[pairs], at[pairs]] = next_piece[pairs]
        next_piece = next_piece + pairs.long()


@dataclass
class Batch:
    """A batch as the loss reads it: each side's ids, attention mask and
    words, and the number of word slots. On a CPU the batch is cut to its
    longest passage and its words (no padding computed); on an accelerator
    every batch has one shape, max_length tokens and the pool's most words
    (``fixed_shape``). A pool without a source side gives None for the
    source's three."""

    source_ids: Optional[torch.Tensor]
    source_mask: Optional[torch.Tensor]
    source_words: Optional[torch.Tensor]
    target_ids: torch.Tensor
    target_mask: torch.Tensor
    target_words: torch.Tensor
    width: int
    fixed_shape: bool = False
    halves: Optional["Halves"] = None


@dataclass
class Halves:
    """Each passage of a batch cut in two at a word, both halves read by
    the target tokenizer alone: ids and attention masks of the queries (the
    first halves) and of their documents, and which passages were long
    enough to cut (``paired``)."""

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    document_ids: torch.Tensor
    document_mask: torch.Tensor
    paired: torch.Tensor


class PassagePool:
    """A random pool of at most `pool_size` passages, cut to what
    `max_length` tokens reach, tokenised by both sides once. Passages are
    drawn with probability proportional to how many of their target tokens
    are trained rows (`is_trained[id]`), so that every occurrence of a
    trained token is equally likely to be read; passages with none teach
    those rows nothing and are never drawn (a fifth of the Unix manual
    pages' passages; drawing this way lifted 500 steps from 0.9458 to
    0.9489 mean cosine on their validation split). `keep_passages`, text of
    another domain, are drawn for `keep_share` of the draws whatever tokens
    they hold (the next-token objective only). With `with_halves`, each
    passage is also cut in two at a word drawn in HALF_CUT, each half read
    by the target tokenizer (the retrieval objective)."""

    def __init__(self, passages: List[str], source: Vocab, target: Vocab,
                 is_trained: torch.Tensor, max_length: int, pool_size: int, seed: int,
                 with_source: bool = True, align: str = "words",
                 keep_passages: Sequence[str] = (), keep_share: float = 0.0,
                 with_halves: bool = False):
        self.generator = torch.Generator().manual_seed(seed)
        if len(passages) > pool_size:
            chosen = torch.randperm(len(passages), generator=self.generator)[:pool_size]
            passages = [passages[i] for i in sorted(chosen.tolist())]
        longest = longest_token(source, target)
        texts = [within_reach(passage, WORDS_PER_TOKEN * max_length, max_length, longest)
                 for passage in passages]
        # Passages of another domain, drawn for `keep_share` of every batch
        # whatever tokens they hold: a next-token loss on them lowers the
        # new output rows where the model must not use them.
        kept_texts = [within_reach(passage, WORDS_PER_TOKEN * max_length, max_length, longest)
                      for passage in keep_passages] if keep_share > 0 else []
        if kept_texts and with_source:
            raise VocabxferError("refine: passages to keep are read by the next-token "
                                 "objective only")
        target_backend = rust_tokenizer(target, max_length, "target")
        target_side = encode_side(target_backend, texts + kept_texts, max_length)
        real = filled_slots(target_side.lengths, max_length, target_side.ids.device)
        counts = (is_trained.cpu()[target_side.ids] & real).sum(1)[:len(texts)]
        keep = counts.nonzero().squeeze(1)
        if not keep.numel():
            raise CorpusError(f"refine: none of the {len(texts):,} passages read has a token "
                              "whose row is being refined (within its first "
                              f"{max_length} tokens), so refinement would learn nothing; "
                              "expected a corpus in the target tokenizer's domain")
        weights = counts[keep].float()
        if kept_texts:
            keep = torch.cat([keep, torch.arange(len(texts), len(texts) + len(kept_texts))])
            share = float(weights.sum()) * keep_share / (1 - keep_share) / len(kept_texts)
            weights = torch.cat([weights, torch.full((len(kept_texts),), share)])
            texts = texts + kept_texts
        texts = [texts[i] for i in keep.tolist()]
        self.target = target_side.select(keep)
        # The source side only where the objective reads it (the teacher's
        # word vectors); the next-token objective reads the target alone.
        self.source = encode_side(rust_tokenizer(source, max_length, "source"), texts,
                                  max_length) if with_source else None
        if align in ("spans", "spans+specials") and self.source is not None:
            align_by_shared_cuts(self.source, self.target, specials=align == "spans+specials")
        for side in (self.source, self.target):  # the spans are needed no more
            if side is not None:
                side.spans = None
        self.queries = self.documents = self.paired = None
        if with_halves:
            self.queries, self.documents, self.paired = read_halves(
                texts, target_backend, max_length, self.generator)
        self.weights = weights
        self.passages = texts
        sides = [side for side in (self.source, self.target) if side is not None]
        # Word slots of a fixed-shape batch: the most words any passage reaches.
        self.width = max(1, max(int(side.word_counts.max()) for side in sides))
        self.fixed_shape = False

    def __len__(self) -> int:
        return len(self.passages)

    def to(self, device: torch.device, fixed_shape: Optional[bool] = None) -> "PassagePool":
        """Moves the pool to `device`. On an accelerator (or with
        `fixed_shape`) batches take one fixed shape from then on: a shape
        that changes every step makes the attention kernels plan anew, and
        cutting a batch to its longest passage needs that length on the
        host; padding costs an accelerator next to nothing at these sizes."""
        self.target = self.target.to(device)
        self.source = self.source.to(device) if self.source is not None else None
        if self.paired is not None:
            self.queries, self.documents = self.queries.to(device), self.documents.to(device)
            self.paired = self.paired.to(device)
        self.fixed_shape = torch.device(device).type != "cpu" if fixed_shape is None \
            else fixed_shape
        for side in (self.source, self.target, self.queries, self.documents):
            if side is not None:
                side.mask = side.padding_mask() if self.fixed_shape else None
        return self

    def draw(self, batch_size: int) -> torch.Tensor:
        """Passage numbers of one batch, without repeats."""
        return torch.multinomial(self.weights, min(batch_size, len(self.weights)),
                                 replacement=False, generator=self.generator)

    def picks(self, batch_size: int, share: Callable[[torch.Tensor], torch.Tensor],
              ahead: int = PICKS_AHEAD) -> Iterator[torch.Tensor]:
        """The passages of each step (``share`` of each global draw), endless:
        drawn `ahead` steps at a time, in the order `draw` gives them, and
        moved to the pool's device in one asynchronous copy from pinned
        memory (a copy from ordinary memory would wait for the device)."""
        device = self.target.ids.device
        while True:
            chunk = torch.stack([share(self.draw(batch_size)) for _ in range(ahead)])
            if device.type == "cuda":
                chunk = chunk.pin_memory().to(device, non_blocking=True)
            yield from chunk.unbind(0)

    def batch(self, picks: torch.Tensor) -> Batch:
        """The batch of passages `picks`: gathers on the pool's device. The
        sizes are fixed or come from CPU tensors, so nothing waits for the
        device."""
        if self.fixed_shape:
            return self.fixed_batch(picks)
        target_ids, target_mask, target_words = gather(self.target, picks)
        width = int(self.target.word_counts[picks].max())
        source = (None, None, None)
        if self.source is not None:
            source = gather(self.source, picks)
            width = max(width, int(self.source.word_counts[picks].max()))
        halves = None
        if self.paired is not None:
            query_ids, query_mask, _ = gather(self.queries, picks)
            document_ids, document_mask, _ = gather(self.documents, picks)
            halves = Halves(query_ids, query_mask, document_ids, document_mask,
                            self.paired[picks.to(self.paired.device, non_blocking=True)])
        return Batch(*source, target_ids, target_mask, target_words, max(width, 1),
                     halves=halves)

    def fixed_batch(self, picks: torch.Tensor) -> Batch:
        rows = picks.to(self.target.ids.device, non_blocking=True)

        def side_of(side: Optional[Side]) -> Tuple[Optional[torch.Tensor], ...]:
            if side is None:
                return None, None, None
            return side.ids[rows], side.mask[rows], side.words[rows]

        halves = None
        if self.paired is not None:
            halves = Halves(self.queries.ids[rows], self.queries.mask[rows],
                            self.documents.ids[rows], self.documents.mask[rows],
                            self.paired[rows])
        return Batch(*side_of(self.source), *side_of(self.target), self.width, fixed_shape=True,
                     halves=halves)


def read_halves(texts: Sequence[str], backend: Any, max_length: int,
                generator: torch.Generator) -> Tuple[Side, Side, torch.Tensor]:
    """(queries, documents, paired): every text cut at a word drawn in
    HALF_CUT and each half read by the target's Rust tokenizer `backend`,
    up to `max_length` tokens; a text too short to cut reads as two empty
    halves, not paired."""
    shares = torch.empty(len(texts)).uniform_(*HALF_CUT, generator=generator).tolist()
    cuts = [cut_in_half(text, share) for text, share in zip(texts, shares)]
    queries = encode_side(backend, [cut[0] if cut else "" for cut in cuts], max_length)
    documents = encode_side(backend, [cut[1] if cut else "" for cut in cuts], max_length)
    for side in (queries, documents):
        side.spans = None
    paired = torch.tensor([cut is not None for cut in cuts], dtype=torch.bool)
    return queries, documents, paired


def gather(side: Side, picks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, words) of the passages `picks` of one side, cut
    to the longest of them."""
    device = side.ids.device
    length = int(side.lengths[picks].max())
    rows = picks.to(device, non_blocking=True)
    mask = filled_slots(side.lengths[picks], length, device)
    return side.ids[rows, :length], mask.long(), side.words[rows, :length]


def filled_slots(lengths: torch.Tensor, length: int, device: torch.device) -> torch.Tensor:
    """(passages, length) bool on `device`: slot j of a passage of
    lengths[i] tokens holds one if j < lengths[i]."""
    return (torch.arange(length, device=device)[None, :] <
            lengths.to(device, non_blocking=True)[:, None])


def pool_words(hidden: torch.Tensor, words: torch.Tensor,
               width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(means, counts): the mean of each word's token vectors, (B, width, H),
    and how many tokens each word has, (B, width). Tokens of word -1 go to a
    slot that is dropped."""
    batch, tokens, size = hidden.shape
    slots = torch.arange(batch, device=words.device)[:, None] * width + words
    slots = torch.where(words >= 0, slots, batch * width).reshape(-1)
    sums = hidden.new_zeros(batch * width + 1, size).index_add(0, slots,
                                                              hidden.reshape(-1, size))
    counts = hidden.new_zeros(batch * width + 1).index_add(
        0, slots, hidden.new_ones(batch * tokens))
    means = sums[:-1] / counts[:-1].clamp(min=1)[:, None]
    return means.view(batch, width, size), counts[:-1].view(batch, width)
