"""Extend a tokenizer: keep every token it has, add the domain's after them.

The new tokens are learned on the corpus with the source tokenizer's own
model and pipeline, then written into a copy of the source tokenizer
itself, never through ``add_tokens`` (added tokens are matched before the
pre-tokenizer: spacing breaks, and the model never produces them):

- byte-level BPE (GPT-2, Llama-3, Qwen, SmolLM2) and other BPEs: merges
  learned on the source's own segmentation of the corpus (BPE training
  continued from where the source's merges stop, ``continued_bpe.py``),
  appended after the source's in the order they were learned; each adds
  one token;
- WordPiece: new entries of a WordPiece trained like the source (greedy
  longest match then reads them);
- Unigram: new pieces of a Unigram trained like the source, with the scores
  it gave them.

Ids 0 .. V-1 stay the source's: same strings, same ids, same special
tokens. A text whose new encoding holds none of the new tokens is encoded
exactly as before: an appended merge ranks after every source merge and
makes a new token that only other appended merges consume; a WordPiece
longest match or a Unigram best path that picks no new token is the one
the source picked.

A source that reads numbers digit by digit (no token of it holds a digit
beside any other character: SmolLM2, Llama-2) keeps doing so: no new token
joins a digit to anything. Otherwise a domain with many numbers (ratings,
prices) would add tokens like "99" or " 10" that then change how every
text with numbers is read.

Text to keep (``keep``: another domain's passages the caller wants read
exactly as before) is encoded beside the corpus in each round: a candidate
it would emit is left out too, and counted (a BPE merge of two tokens that
meet in it is never learned).

Every new token must be produced when the corpus is encoded. An appended
BPE merge learned on a fresh tokenizer can be "rank-dead": the source's own
merges, which rank first, segment the text so that its two parts never
meet (merges learned on the source's segmentation cannot be, but it is
checked all the same). Each round encodes the corpus's first 200,000
passages (those BPE merges are learned on), keeps the tokens produced
(emitted, or a step of a longer new token that is emitted), leaves the
others out, fills the places with the next candidates, and says how many
were left out and why.
"""

import copy
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from vocabxfer.errors import VocabError, VocabxferError
from vocabxfer.training.continued_bpe import joiner, learn_merges
from vocabxfer.training.corpus import CorpusFiles, check_corpus, corpus_paths, iter_passages
from vocabxfer.training.tokenizer import MAX_VOCAB_SIZE, backend_document, train_tokenizer
from vocabxfer.vocabularies import families
from vocabxfer.vocabularies.readers import VocabSource, load_vocab

logger = logging.getLogger(__name__)

MODEL_TYPES = ("BPE", "WordPiece", "Unigram")
MAX_ADD = 2 ** 20
# Passages of the corpus that BPE merges are learned on, and that are
# encoded to find which new tokens are produced.
SAMPLE_PASSAGES = 200_000
ROUNDS = 6


@dataclass
class Candidate:
    """One token to add: its text, the merge that makes it (BPE), its score
    (Unigram)."""

    token: str
    parts: Optional[Tuple[str, str]] = None
    score: Optional[float] = None


@dataclass
class TokenizerExtension:
    """What extend_tokenizer did: the extended tokenizer (a transformers fast
    tokenizer), the source's size, the tokens added (ids source_size
    onwards, in this order), and what was left out."""

    tokenizer: Any
    source_name: str
    model_type: str
    source_size: int
    added: List[str]
    emitted: int  # added tokens that appear in the corpus's encoding
    steps_only: int  # added BPE tokens produced only as steps of longer ones
    rank_dead: List[str] = field(default_factory=list)
    passages: int = 0
    digit_tokens_refused: int = 0  # candidates joining a digit, for a digit-by-digit source
    kept_text_tokens: List[str] = field(default_factory=list)  # emitted on the text to keep

    def __str__(self) -> str:
        kind = {"BPE": "BPE", "WordPiece": "WordPiece", "Unigram": "Unigram"}[self.model_type]
        text = (f"extended {self.source_name} ({kind}, {self.source_size:,} tokens) by "
                f"{len(self.added):,} tokens learned on {self.passages:,} passages: ids 0-"
                f"{self.source_size - 1:,} unchanged, new ids {self.source_size:,}-"
                f"{self.source_size + len(self.added) - 1:,}; every new token is produced on "
                f"the corpus ({self.emitted:,} emitted")
        text += f", {self.steps_only:,} only as steps of longer ones)" if self.steps_only \
            else ")"
        if self.digit_tokens_refused:
            text += (f"; {self.digit_tokens_refused:,} candidates joining a digit to another "
                     "character were not added: the source reads numbers digit by digit")
        if self.kept_text_tokens:
            text += (f"; {len(self.kept_text_tokens):,} candidates that the text to keep would "
                     "use were left out")
        if self.rank_dead:
            examples = ", ".join(repr(readable(token)) for token in self.rank_dead[:3])
            text += (f"; {len(self.rank_dead):,} candidates were never produced and were left "
                     f"out (rank-dead: the source's own rules segment the text around them; "
                     f"e.g. {examples})")
        return text


def readable(token: str) -> str:
    """A byte-level token as the text it stands for (its bytes decoded,
    broken characters shown as such); other tokens as they are."""
    data = families.decode_byte_level(token)
    return data.decode("utf-8", "replace") if data is not None else token


def token_text(token: str, continuation_prefix: str) -> str:
    """The characters a token spells: byte-level decoded, without the
    WordPiece continuation prefix or SentencePiece's word-start mark."""
    text = readable(token)
    if continuation_prefix and text.startswith(continuation_prefix):
        text = text[len(continuation_prefix):]
    return text.replace(families.SENTENCEPIECE_SPACE, " ")


def joins_a_digit(token: str, continuation_prefix: str = "") -> bool:
    text = token_text(token, continuation_prefix)
    return len(text) > 1 and any(char.isdigit() for char in text)


BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def reads_digits_one_by_one(tokens: Sequence[str], continuation_prefix: str = "",
                            specials: Collection[str] = ()) -> bool:
    """Whether the source has digits but no token holding a digit beside
    any other character (special tokens and SentencePiece's byte pieces,
    <0x0A>, are no numbers and are not counted)."""
    words = [token for token in tokens
             if token not in specials and not BYTE_PIECE.fullmatch(token)]
    has_digits = any(token_text(token, continuation_prefix).isdigit() for token in words)
    return has_digits and not any(joins_a_digit(token, continuation_prefix)
                                  for token in words)


def check_add(add: Any) -> None:
    if not isinstance(add, int) or isinstance(add, bool) or not 1 <= add <= MAX_ADD:
        raise VocabxferError(f"add must be an int from 1 to {MAX_ADD:,} (the tokens to learn), "
                             f"got {add!r}")


def extend_tokenizer(source: VocabSource, files: CorpusFiles, add: int, *,
                     min_frequency: int = 2, exclude: Collection[str] = (),
                     keep: Sequence[str] = (),
                     show_progress: bool = True) -> TokenizerExtension:
    """Learn up to `add` new tokens on the corpus `files` with the source
    tokenizer's own model type and append them to it (see the module
    docstring). Returns a TokenizerExtension whose ``tokenizer`` is a
    transformers fast tokenizer: ids 0 .. V-1 are the source's, the new
    tokens follow. Passages in `exclude` (held out) are not learned from;
    no new token is one that the passages `keep` would use.

    Raises VocabxferError for an `add` that is not a positive int or is
    absurd, a tokenizer type that cannot be extended (WordLevel, or a
    tokenizer without its tokenizers backend), and a corpus that yields no
    new token; CorpusError for a missing or empty corpus."""
    check_add(add)
    vocab = load_vocab(source)
    document = backend_document(vocab)
    if document is None:
        raise VocabError(f"{vocab.name}: has no tokenizers backend (no tokenizer.json), so its "
                         "pipeline cannot be extended; pass the tokenizer itself (a folder "
                         "with tokenizer.json, or a fast tokenizer)")
    model_type = str(document.get("model", {}).get("type"))
    if model_type not in MODEL_TYPES:
        raise VocabxferError(f"{vocab.name}: a {model_type} tokenizer cannot be extended (it "
                             "has no rule that builds a new token from known ones); expected "
                             f"one of {', '.join(MODEL_TYPES)}")
    source_size = len(vocab)
    if source_size + add > MAX_VOCAB_SIZE:
        raise VocabxferError(f"add {add:,} would make {source_size + add:,} tokens, more than "
                             f"the {MAX_VOCAB_SIZE:,} any tokenizer holds")
    paths = corpus_paths(files)
    check_corpus(paths)
    excluded = set(exclude)
    sample = list(_first_passages(paths, excluded, SAMPLE_PASSAGES))
    refuse = (lambda token: joins_a_digit(token, vocab.continuation_prefix)) \
        if reads_digits_one_by_one(vocab.tokens, vocab.continuation_prefix,
                                   vocab.all_special_tokens) else None
    keep_users: List[str] = []
    if model_type == "BPE":
        # Learned where the appended merges will fire: on the source's own
        # segmentation of the corpus (see continued_bpe.py).
        model = document["model"]
        join = joiner(model.get("continuing_subword_prefix"))
        learned = learn_merges(_encoder(document), sample, add + max(16, add // 50),
                               existing=set(vocab.ids), min_frequency=min_frequency, keep=keep,
                               refuse=refuse, join=join, show_progress=show_progress)
        candidates = [Candidate(join(left, right), parts=(left, right))
                      for left, right in learned.merges]
        refused, keep_users = len(learned.refused), list(learned.kept_text)
    else:
        candidates = _candidates(vocab, document, model_type, files, add, min_frequency,
                                 excluded, show_progress)
        kept_candidates = [candidate for candidate in candidates
                           if refuse is None or not refuse(candidate.token)]
        refused = len(candidates) - len(kept_candidates)
        candidates = kept_candidates
    if not candidates:
        raise VocabxferError(f"the corpus yields no token that {vocab.name} lacks: nothing to "
                             "add (the source already holds every piece the corpus needs)")
    kept: List[Candidate] = []
    dead: List[str] = []
    keep_sample = list(keep)[:SAMPLE_PASSAGES]
    position = 0

    def check():
        """(the document, produced, emitted, the kept tokens to leave out
        as rank-dead, as used by the text to keep)."""
        document_now = _extended_document(document, model_type, source_size, kept)
        encoder = _encoder(document_now)
        produced_now, emitted_now = _produced(encoder, model_type, source_size, kept, sample)
        used = _produced(encoder, model_type, source_size, kept, keep_sample)[1] \
            if keep_sample else set()
        never = [candidate.token for candidate in kept if candidate.token not in produced_now]
        keeps = [candidate.token for candidate in kept
                 if candidate.token in used and candidate.token in produced_now]
        return document_now, produced_now, emitted_now, never, keeps

    # Rounds that fill the places left, then rounds that only leave out (a
    # removal can let another appended merge fire: checked until none does).
    for round_number in range(4 * ROUNDS):
        if round_number < ROUNDS:
            position = _fill(kept, candidates, position, add, vocab.ids)
        tokenizer_document, produced, emitted, newly_dead, newly_kept_out = check()
        if not newly_dead and not newly_kept_out:
            break
        dead += newly_dead
        keep_users += newly_kept_out
        out = set(newly_dead) | set(newly_kept_out)
        # A BPE token whose merge needs one left out cannot be made either.
        for candidate in kept:
            if candidate.parts is not None and any(part in out for part in candidate.parts):
                out.add(candidate.token)
        kept = [candidate for candidate in kept if candidate.token not in out]
    else:
        raise VocabxferError("the extension did not settle: leaving out the tokens that are "
                             "never produced (or that the text to keep would use) kept making "
                             "others so; please report this with the corpus")
    if not kept:
        raise VocabxferError(f"none of the {len(candidates):,} candidate tokens learned on the "
                             f"corpus is ever produced by {vocab.name}'s own rules; nothing to "
                             "add")
    if len(kept) < add:
        logger.warning("the corpus yields %d new tokens that the extended tokenizer produces, "
                       "fewer than the %d asked for", len(kept), add)
    tokenizer = _wrap(tokenizer_document, vocab)
    return TokenizerExtension(tokenizer=tokenizer, source_name=vocab.name,
                              model_type=model_type, source_size=source_size,
                              added=[candidate.token for candidate in kept],
                              emitted=len(emitted), steps_only=len(produced) - len(emitted),
                              rank_dead=dead, passages=len(sample),
                              digit_tokens_refused=refused, kept_text_tokens=keep_users)


def _first_passages(paths, excluded, count):
    for number, passage in enumerate(p for p in iter_passages(paths) if p not in excluded):
        if number >= count:
            return
        yield passage


def _candidates(vocab, document, model_type: str, files, add: int, min_frequency: int,
                excluded, show_progress: bool) -> List[Candidate]:
    """WordPiece entries or Unigram pieces the source lacks, learned on the
    corpus by a tokenizer trained like the source (its model and pipeline),
    in the order the trained model ranks them; the trained vocabulary grows
    until it offers a few times `add` of them."""
    source_tokens = vocab.ids
    base = len(document.get("added_tokens") or []) + 256
    size = min(MAX_VOCAB_SIZE, base + 3 * add)
    candidates: List[Candidate] = []
    for _ in range(4):
        trained = train_tokenizer(files, size, min_frequency, like=vocab,
                                  show_progress=show_progress, exclude=excluded)
        trained_document = json.loads(trained.backend_tokenizer.to_str())
        model = trained_document["model"]
        if model_type == "WordPiece":
            ordered = sorted(model["vocab"].items(), key=lambda item: item[1])
            added = set(_added_contents(trained_document))
            candidates = [Candidate(token) for token, _ in ordered
                          if token not in source_tokens and token not in added]
        else:
            pieces = [(piece, score) for piece, score in model["vocab"]
                      if piece not in source_tokens]
            pieces.sort(key=lambda item: -item[1])
            candidates = [Candidate(piece, score=score) for piece, score in pieces]
        # Room for the rank-dead ones: a few times what is asked for.
        if len(candidates) >= 2 * add or size >= MAX_VOCAB_SIZE:
            break
        size = min(MAX_VOCAB_SIZE, size * 2)
    return candidates


def _added_contents(document) -> List[str]:
    return [token.get("content") for token in document.get("added_tokens") or []]


def _fill(kept: List[Candidate], candidates: List[Candidate], position: int, add: int,
          source_tokens: Dict[str, int]) -> int:
    """Append candidates after `position` until `add` are kept; a BPE
    candidate whose parts are not tokens (one of them left out) is skipped.
    Returns where the next fill starts."""
    have = set(source_tokens) | {candidate.token for candidate in kept}
    while len(kept) < add and position < len(candidates):
        candidate = candidates[position]
        position += 1
        if candidate.token in have:
            continue
        if candidate.parts is not None and not all(part in have for part in candidate.parts):
            continue
        kept.append(candidate)
        have.add(candidate.token)
    return position


def _extended_document(document: Dict[str, Any], model_type: str, source_size: int,
                       kept: Sequence[Candidate]) -> Dict[str, Any]:
    """A copy of the source's tokenizer.json with the kept tokens appended
    (ids from source_size) and, for BPE, their merges after the source's."""
    extended = copy.deepcopy(document)
    model = extended["model"]
    if model_type == "Unigram":
        if len(model["vocab"]) != source_size:
            raise VocabxferError("this Unigram tokenizer keeps tokens outside its model's "
                                 "pieces (added tokens after them), so pieces cannot be "
                                 "appended with the next ids; it cannot be extended")
        model["vocab"] = list(model["vocab"]) + [[candidate.token, float(candidate.score)]
                                                 for candidate in kept]
        return extended
    vocab = dict(model["vocab"])
    for offset, candidate in enumerate(kept):
        vocab[candidate.token] = source_size + offset
    model["vocab"] = vocab
    if model_type == "BPE":
        as_strings = bool(model["merges"]) and isinstance(model["merges"][0], str)
        model["merges"] = list(model["merges"]) + [
            f"{left} {right}" if as_strings else [left, right]
            for left, right in (candidate.parts for candidate in kept)]
    return extended


def _encoder(document: Dict[str, Any]) -> Any:
    """The tokenizer a tokenizer.json describes, reading whole passages."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json.dumps(document))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _produced(tokenizer: Any, model_type: str, source_size: int,
              kept: Sequence[Candidate], sample: List[str]) -> Tuple[set, set]:
    """(the new tokens the encoding of `sample` produces, those it emits). A
    BPE token is produced if it is emitted or is a part of a produced
    token's merge (its own merge then fired)."""
    new_token = {source_size + offset: candidate.token for offset, candidate in enumerate(kept)}
    emitted = set()
    for start in range(0, len(sample), 2048):
        for encoding in tokenizer.encode_batch(sample[start:start + 2048],
                                               add_special_tokens=False):
            emitted.update(new_token[index] for index in encoding.ids if index in new_token)
    produced = set(emitted)
    if model_type == "BPE":
        parts_of = {candidate.token: candidate.parts for candidate in kept}
        pending = list(emitted)
        while pending:
            for part in parts_of.get(pending.pop(), ()):
                if part in parts_of and part not in produced:
                    produced.add(part)
                    pending.append(part)
    return produced, emitted


def _wrap(document: Dict[str, Any], vocab: Any) -> Any:
    """A transformers fast tokenizer over the extended tokenizer.json, with
    the source's special tokens and settings (its chat template, length
    limit, sides: from its folder or its transformers tokenizer)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    roles = {f"{role}_token": token for role, token in vocab.special_tokens_map.items()
             if role in families.ROLES}
    original = vocab.tokenizer
    wrapped = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(document)),
                                      **roles, **vocab.settings)
    wrapped.name_or_path = f"{vocab.name}, extended"
    wrapped.model_input_names = getattr(original, "model_input_names", None) or \
        families.model_input_names(vocab.family)
    return wrapped
