"""The token map: which target token starts from which source token."""

from array import array
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from itertools import compress, repeat
from typing import Any, Dict, List, Tuple

import torch

from vocabxfer.vocabularies import families
from vocabxfer.errors import VocabxferError
from vocabxfer.vocabularies.readers import VocabSource, load_vocab
from vocabxfer.vocabularies.vocab import Vocab

MODES = ("exact", "canonical")
EXAMPLES_PER_KIND = 5


class MatchReport:
    """What a match found, by kind of target token, with examples. The
    counts by kind are worked out when first asked for: a match that only
    needs its pairs never classifies a token."""

    def __init__(self, mode: str, source: Vocab, target: Vocab, source_of: List[int],
                 ambiguous: int = 0, canonical_only: int = 0):
        self.mode = mode
        self.source_name, self.target_name = source.name, target.name
        self.source_size, self.target_size = len(source), len(target)
        self.source_family, self.target_family = source.family, target.family
        self.unmatched = source_of.count(UNMATCHED)
        self.matched = len(source_of) - self.unmatched
        # Target tokens whose canonical form several source tokens share; the
        # exact string won where present, else the lowest source id.
        self.ambiguous = ambiguous
        # Matched through the canonical form although the strings differ.
        self.canonical_only = canonical_only
        self._source, self._target, self._source_of = source, target, source_of

    @cached_property
    def _by_kind(self):
        kinds = kinds_of(self._target)
        matched_flags = [source_id != UNMATCHED for source_id in self._source_of]
        matched_counts = Counter(compress(kinds, matched_flags))
        unmatched_counts = Counter(kinds)
        unmatched_counts.subtract(matched_counts)
        matched_by_kind = {kind: count for kind, count in matched_counts.items() if count}
        unmatched_by_kind = {kind: count for kind, count in unmatched_counts.items() if count}
        # Examples: the first few of each kind, matched and not; the scan
        # stops once every group has all it can show.
        missing = {(kind, True): min(count, EXAMPLES_PER_KIND)
                   for kind, count in matched_by_kind.items()}
        missing.update({(kind, False): min(count, EXAMPLES_PER_KIND)
                        for kind, count in unmatched_by_kind.items()})
        owed = sum(missing.values())
        matched_examples: Dict[str, List[Tuple[str, str]]] = {}
        unmatched_examples: Dict[str, List[str]] = {}
        for target_id, (kind, matched) in enumerate(zip(kinds, matched_flags)):
            if not owed:
                break
            if not missing[(kind, matched)]:
                continue
            missing[(kind, matched)] -= 1
            owed -= 1
            token = self._target.tokens[target_id]
            if matched:
                matched_examples.setdefault(kind, []).append(
                    (token, self._source.tokens[self._source_of[target_id]]))
            else:
                unmatched_examples.setdefault(kind, []).append(token)
        return matched_by_kind, unmatched_by_kind, matched_examples, unmatched_examples

    @property
    def matched_by_kind(self) -> Dict[str, int]:
        return self._by_kind[0]

    @property
    def unmatched_by_kind(self) -> Dict[str, int]:
        return self._by_kind[1]

    @property
    def matched_examples(self) -> Dict[str, List[Tuple[str, str]]]:
        return self._by_kind[2]

    @property
    def unmatched_examples(self) -> Dict[str, List[str]]:
        return self._by_kind[3]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "mode": self.mode, "source": self.source_name, "target": self.target_name,
            "source_size": self.source_size, "target_size": self.target_size,
            "source_family": self.source_family, "target_family": self.target_family,
            "matched": self.matched, "unmatched": self.unmatched,
            "matched_by_kind": dict(self.matched_by_kind),
            "unmatched_by_kind": dict(self.unmatched_by_kind),
            "matched_examples": {kind: [list(pair) for pair in pairs]
                                 for kind, pairs in self.matched_examples.items()},
            "unmatched_examples": {kind: list(tokens)
                                   for kind, tokens in self.unmatched_examples.items()},
            "ambiguous": self.ambiguous, "canonical_only": self.canonical_only,
        }

    def __str__(self) -> str:
        share = self.matched / self.target_size if self.target_size else 0.0
        lines = [
            f"token map ({self.mode}): target {self.target_name} ({self.target_size:,} tokens, "
            f"{self.target_family}) <- source {self.source_name} ({self.source_size:,} tokens, "
            f"{self.source_family})",
            f"matched {self.matched:,} of {self.target_size:,} target tokens ({share:.1%}); "
            f"{self.unmatched:,} unmatched",
        ]
        if self.mode == "canonical":
            lines.append(f"  {self.canonical_only:,} matched through the canonical form only; "
                         f"{self.ambiguous:,} had several source candidates")
        lines.append(f"  {'kind':<13}{'matched':>9}{'unmatched':>11}  examples")
        for kind in families.KINDS:
            matched = self.matched_by_kind.get(kind, 0)
            unmatched = self.unmatched_by_kind.get(kind, 0)
            if not matched and not unmatched:
                continue
            shown = [target if target == source else f"{target}->{source}"
                     for target, source in self.matched_examples.get(kind, [])[:3]]
            missing = self.unmatched_examples.get(kind, [])[:3]
            examples = ", ".join(shown)
            if missing:
                examples += ("; " if examples else "") + "unmatched: " + ", ".join(missing)
            lines.append(f"  {kind:<13}{matched:>9,}{unmatched:>11,}  {examples}")
        return "\n".join(lines)


@dataclass
class TokenMap:
    """Pairs (target id, source id) of matched tokens, as int64 tensors, each
    target id at most once, in increasing target id; the target ids left
    unmatched; and the report."""

    target_ids: torch.Tensor
    source_ids: torch.Tensor
    unmatched_target_ids: torch.Tensor
    source: Vocab
    target: Vocab
    report: MatchReport

    def __len__(self) -> int:
        return int(self.target_ids.numel())

    def __str__(self) -> str:
        return str(self.report)


def kinds_of(vocab: Vocab) -> List[str]:
    """The kind of every token, by id."""
    special, added = vocab.all_special_tokens, vocab.added_tokens
    if vocab.family == families.WORDPIECE and not added - special:
        # The common case, kept to string tests: it runs on every match.
        prefix = vocab.continuation_prefix
        continuation, word_start = families.CONTINUATION, families.WORD_START
        kinds = [continuation if token.startswith(prefix) and token != prefix else word_start
                 for token in vocab.tokens]
        for token in special:
            kinds[vocab.ids[token]] = families.SPECIAL
        return kinds
    classify, family, prefix = families.classify, vocab.family, vocab.continuation_prefix
    return [families.SPECIAL if token in special else families.OTHER if token in added
            else classify(token, family, prefix)[0] for token in vocab.tokens]


def canonical_keys(vocab: Vocab, casefold: bool, remove_accents: bool) -> List[Tuple[str, Any]]:
    """The family-neutral key of every token, by id."""
    keys: List[Tuple[str, Any]] = []
    roles = {token: role for role, token in vocab.special_tokens_map.items()}
    for token in vocab.tokens:
        if token in vocab.all_special_tokens:
            role = roles.get(token)
            keys.append((families.SPECIAL, role) if role else ("unnamed-special", token))
            continue
        if token in vocab.added_tokens:
            keys.append((families.OTHER, token))
            continue
        kind, text = families.classify(token, vocab.family, vocab.continuation_prefix)
        if kind != families.BYTE:
            text = families.normalise(text, casefold, remove_accents)
        keys.append((kind, text))
    return keys


# A matcher returns, for every target id, the matched source id or
# UNMATCHED, plus the counts of ambiguous and canonical-only matches.
UNMATCHED = -1
MatchResult = Tuple[List[int], int, int]


def match_exact(source: Vocab, target: Vocab) -> MatchResult:
    return list(map(source.ids.get, target.tokens, repeat(UNMATCHED))), 0, 0


def match_canonical(source: Vocab, target: Vocab) -> MatchResult:
    casefold = source.lowercase or target.lowercase
    remove_accents = source.strip_accents or target.strip_accents
    source_keys = canonical_keys(source, casefold, remove_accents)
    first_with_key: Dict[Tuple[str, Any], int] = {}
    shared = set()
    for source_id, key in enumerate(source_keys):
        if key in first_with_key:
            shared.add(key)
        else:
            first_with_key[key] = source_id
    # A role the source lacks may be played by its stand-in (cls by bos, ...).
    for role, stand_in in families.ROLE_STAND_INS.items():
        key, stand_in_key = (families.SPECIAL, role), (families.SPECIAL, stand_in)
        if key not in first_with_key and stand_in_key in first_with_key:
            first_with_key[key] = first_with_key[stand_in_key]

    source_of: List[int] = []
    ambiguous = canonical_only = 0
    for token, key in zip(target.tokens, canonical_keys(target, casefold, remove_accents)):
        source_id = first_with_key.get(key, UNMATCHED)
        if source_id != UNMATCHED:
            if key in shared:
                ambiguous += 1
                exact = source.ids.get(token)
                if exact is not None and source_keys[exact] == key:
                    source_id = exact
            if source.tokens[source_id] != token:
                canonical_only += 1
        source_of.append(source_id)
    return source_of, ambiguous, canonical_only


def match_vocab(source: VocabSource, target: VocabSource, mode: str = "exact") -> TokenMap:
    """Match every target token to a source token.

    ``mode="exact"``: identical strings, the rule of the common recipe.
    ``mode="canonical"``: compare in a family-neutral form, so that
    tokenizers of different families match where they mean the same text:
    WordPiece ``##x``, SentencePiece ``x`` and byte-level ``x`` are all
    "continuation x"; WordPiece ``x``, ``▁x`` and ``Ġx`` are all "word-start
    x"; byte-level tokens are decoded from GPT-2's byte alphabet first;
    SentencePiece ``<0xNN>`` and byte-level pieces that are not whole UTF-8
    are matched as bytes; both sides are NFC-normalised, and case-folded
    (and accent-stripped) when either side is uncased; special tokens are
    matched by role (``[CLS]``/``<s>``, ``[SEP]``/``</s>``, ``[PAD]``/``<pad>``,
    ``[UNK]``/``<unk>``, ``[MASK]``/``<mask>``), never by string. When several
    source tokens share a form, the one with the target's exact string wins,
    else the lowest source id (the most frequent, for BPE and Unigram
    vocabularies ordered by frequency); ``report.ambiguous`` counts these.

    ``source`` and ``target`` are anything ``load_vocab`` reads. Raises
    VocabxferError (a ValueError) for an unknown mode and VocabError for an
    unreadable vocabulary.
    """
    if mode not in MODES:
        raise VocabxferError(f"match_vocab: mode {mode!r} is not one of {', '.join(MODES)}")
    source_vocab = load_vocab(source)
    target_vocab = load_vocab(target)
    matcher = match_exact if mode == "exact" else match_canonical
    source_of, ambiguous, canonical_only = matcher(source_vocab, target_vocab)
    # Through an int64 array: torch.tensor on a list of 30,000 ints costs
    # more than the match itself.
    pairs = torch.frombuffer(array("q", source_of), dtype=torch.int64).clone() \
        if source_of else torch.empty(0, dtype=torch.int64)
    matched = pairs != UNMATCHED
    report = MatchReport(mode, source_vocab, target_vocab, source_of, ambiguous, canonical_only)
    return TokenMap(target_ids=matched.nonzero().squeeze(1), source_ids=pairs[matched],
                    unmatched_target_ids=(~matched).nonzero().squeeze(1),
                    source=source_vocab, target=target_vocab, report=report)
