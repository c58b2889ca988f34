"""Train the target tokenizer on the user's corpus, streamed from its files:
a corpus larger than memory trains as well as a small one."""

import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Collection, Dict, Iterable, Iterator, List, Optional

from vocabxfer.errors import VocabxferError
from vocabxfer.training.corpus import (CorpusFiles, Reservoir, check_corpus, corpus_paths,
                                       iter_passages)
from vocabxfer.vocabularies import families
from vocabxfer.vocabularies.readers import VocabSource, load_vocab

logger = logging.getLogger(__name__)

MODELS = ("wordpiece", "bpe", "unigram")
BACKEND_MODEL = {"wordpiece": "WordPiece", "bpe": "BPE", "unigram": "Unigram"}
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# Characters seen fewer times than this stay out of the alphabet.
ALPHABET_MIN_COUNT = 2
# The alphabet is counted on the corpus's first passages up to this many
# characters: enough to see every script it uses, bounded for huge corpora.
ALPHABET_SAMPLE_CHARS = 50_000_000
UNK_RATE_WARNING = 0.01
UNK_SAMPLE_PASSAGES = 2000

def corpus_alphabet_size(lines: Iterable[str], min_count: int = ALPHABET_MIN_COUNT,
                         max_chars: int = ALPHABET_SAMPLE_CHARS) -> int:
    """How many distinct characters occur at least `min_count` times: the
    alphabet a tokenizer needs so that rare scripts (Hangul has thousands of
    syllables) do not become [UNK]."""
    counts: Counter = Counter()
    seen = 0
    for line in lines:
        counts.update(line)
        seen += len(line)
        if seen >= max_chars:
            break
    return sum(1 for char, count in counts.items() if count >= min_count and not char.isspace())


def batches(passages: Iterable[str], size: int = 1000) -> Iterator[List[str]]:
    iterator = iter(passages)
    while True:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield batch


# ---- the tokenizer's pipeline -----------------------------------------------------

# The largest vocabularies in use hold about a million tokens; the Rust
# trainers abort the whole process (no exception) when asked for 10**9.
MAX_VOCAB_SIZE = 2 ** 24
MAX_COUNT = 2 ** 32  # min_frequency and limit_alphabet: any real corpus is below


def check_sizes(vocab_size: Any, min_frequency: Any, limit_alphabet: Any,
                special_count: int) -> None:
    def is_int(value):
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(vocab_size) or not special_count < vocab_size <= MAX_VOCAB_SIZE:
        raise VocabxferError(f"vocab_size must be an int larger than the {special_count} "
                             f"special tokens and at most {MAX_VOCAB_SIZE:,}, got "
                             f"{vocab_size!r}")
    if not is_int(min_frequency) or not 0 <= min_frequency <= MAX_COUNT:
        raise VocabxferError(f"min_frequency must be an int of at least 0 and at most "
                             f"{MAX_COUNT:,}, got {min_frequency!r}")
    if limit_alphabet is not None and (not is_int(limit_alphabet) or
                                       not 1 <= limit_alphabet <= MAX_COUNT):
        raise VocabxferError(f"limit_alphabet must be a positive int of at most "
                             f"{MAX_COUNT:,}, got {limit_alphabet!r}")


def casing_normalizer(normalizers, lowercase: bool, strip_accents: bool):
    steps = [normalizers.NFC()]
    if strip_accents:
        steps = [normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def standard_pipeline(model: str, lowercase: bool, strip_accents: bool, unk: str):
    """A fresh tokenizer of the family: BERT's pipeline for WordPiece,
    GPT-2's byte level for BPE, SentencePiece's Metaspace for Unigram."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    if model == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=unk))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase,
                                                          strip_accents=strip_accents)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
    elif model == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = casing_normalizer(normalizers, lowercase, strip_accents)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = casing_normalizer(normalizers, lowercase, strip_accents)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
    return tokenizer


def cloned_pipeline(document: Dict[str, Any]):
    """The source tokenizer's pipeline (normaliser, pre-tokenizer, decoder)
    around an empty model of its type, as transformers'
    train_new_from_iterator builds it; the post-processor is set after
    training, when the special tokens have their new ids."""
    from tokenizers import Tokenizer, models

    document = dict(document)
    model = dict(document["model"])
    if model.get("type") == "Unigram":
        document["model"] = json.loads(Tokenizer(models.Unigram()).to_str())["model"]
    else:
        model["vocab"] = {}
        if "merges" in model:
            model["merges"] = []
        document["model"] = model
    document["added_tokens"] = []
    document["post_processor"] = None
    document["padding"] = None
    document["truncation"] = None
    return Tokenizer.from_str(json.dumps(document))


def retarget_post_processor(state: Any, token_to_id) -> Any:
    """The post-processor's JSON with every special token's id looked up
    anew in the trained vocabulary (TemplateProcessing, BERT and RoBERTa
    processing, and Sequences of them). None if a token is missing."""
    if isinstance(state, dict):
        kind = state.get("type")
        if kind == "TemplateProcessing":
            specials = {}
            for name, special in (state.get("special_tokens") or {}).items():
                ids = [token_to_id(token) for token in special.get("tokens", [])]
                if None in ids:
                    return None
                specials[name] = dict(special, ids=ids)
            return dict(state, special_tokens=specials)
        if kind in ("BertProcessing", "RobertaProcessing"):
            updated = dict(state)
            for role in ("sep", "cls"):
                token = state[role][0]
                if token_to_id(token) is None:
                    return None
                updated[role] = [token, token_to_id(token)]
            return updated
        if kind == "Sequence":
            processors = [retarget_post_processor(child, token_to_id)
                          for child in state.get("processors", [])]
            return None if None in processors else dict(state, processors=processors)
    return state


def backend_document(vocab: Any) -> Optional[Dict[str, Any]]:
    """The JSON form of the vocabulary's tokenizer, if it has a tokenizers one."""
    tokenizer = vocab.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None) or tokenizer
    if backend is None or not hasattr(backend, "to_str"):
        return None
    return json.loads(backend.to_str())


# ---- training ---------------------------------------------------------------------

@dataclass
class Pipeline:
    """An untrained tokenizer and what training it needs."""

    tokenizer: Any
    special_tokens: List[str]
    roles: Dict[str, str]
    # The source's post-processor, to point at the trained ids; None when
    # the standard pipeline's [CLS]/[SEP] template is used instead.
    post_processor: Optional[Dict[str, Any]]
    cloned: bool


def special_roles(source: Any, model: str) -> Dict[str, str]:
    if source is None or not source.special_tokens_map:
        return dict(BERT_SPECIALS)
    roles = dict(source.special_tokens_map)
    if model == "wordpiece":
        roles.setdefault("unk", "[UNK]")
    return roles


def model_like(source: Any, document: Optional[Dict[str, Any]]) -> str:
    """The kind of tokenizer to train so that it is the source's kind: read
    from its tokenizers model (its JSON `document`) where it has one, else
    from its family."""
    if source is None:
        return "wordpiece"
    kind = (document or {}).get("model", {}).get("type")
    by_backend = {backend: model for model, backend in BACKEND_MODEL.items()}
    if kind in by_backend:
        return by_backend[kind]
    return {families.BYTELEVEL: "bpe", families.SENTENCEPIECE: "unigram"}.get(source.family,
                                                                          "wordpiece")


def build_pipeline(source: Any, document: Optional[Dict[str, Any]], model: str,
                   lowercase: Optional[bool], strip_accents: Optional[bool]) -> Pipeline:
    """The untrained tokenizer: `source`'s own pipeline (from its JSON
    `document`) when it is of the `model` kind and no casing is overridden,
    else the kind's standard one with `source`'s casing and specials."""
    roles = special_roles(source, model)
    if (document is not None and lowercase is None and strip_accents is None
            and document.get("model", {}).get("type") == BACKEND_MODEL[model]):
        special_tokens = [token for token in source.tokens if token in source.all_special_tokens]
        return Pipeline(cloned_pipeline(document), special_tokens, roles,
                        document.get("post_processor"), cloned=True)
    lowercase = (source.lowercase if source else False) if lowercase is None else lowercase
    strip_accents = (source.strip_accents if source else lowercase) \
        if strip_accents is None else strip_accents
    tokenizer = standard_pipeline(model, lowercase, strip_accents, roles.get("unk", "<unk>"))
    return Pipeline(tokenizer, list(dict.fromkeys(roles.values())), roles, None, cloned=False)


def trainer_for(pipeline: Pipeline, model: str, vocab_size: int, min_frequency: int,
                limit_alphabet: Optional[int], passages, show_progress: bool):
    from tokenizers import trainers

    if model == "wordpiece":
        alphabet = limit_alphabet or corpus_alphabet_size(passages())
        return trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         special_tokens=pipeline.special_tokens,
                                         limit_alphabet=alphabet, show_progress=show_progress)
    if model == "bpe":
        pre_tokenizer = json.loads(pipeline.tokenizer.to_str()).get("pre_tokenizer")
        byte_level = "ByteLevel" in json.dumps(pre_tokenizer)
        from tokenizers import pre_tokenizers

        return trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency,
            special_tokens=pipeline.special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
            show_progress=show_progress)
    return trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=pipeline.special_tokens,
                                   unk_token=pipeline.roles.get("unk", "<unk>"),
                                   show_progress=show_progress)


def set_post_processor(pipeline: Pipeline) -> None:
    """The source's post-processor with the trained ids, or [CLS] $A [SEP]."""
    from tokenizers import processors

    tokenizer = pipeline.tokenizer
    if pipeline.cloned:
        if pipeline.post_processor is not None:
            state = retarget_post_processor(pipeline.post_processor, tokenizer.token_to_id)
            if state is not None:
                tokenizer.post_processor = json_post_processor(state)
        return
    cls, sep = pipeline.roles.get("cls"), pipeline.roles.get("sep")
    if cls is not None and sep is not None and tokenizer.token_to_id(cls) is not None \
            and tokenizer.token_to_id(sep) is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))])


@dataclass(frozen=True)
class TokenizerTraining:
    """How a target tokenizer is trained when only text is given (see
    train_tokenizer): its size, the least count of a token, and its kind
    (None: the source tokenizer's kind)."""

    vocab_size: int = 30000
    min_frequency: int = 2
    model: Optional[str] = None

    def __post_init__(self) -> None:
        if self.model is not None and self.model not in MODELS:
            raise VocabxferError(f"the tokenizer model {self.model!r} is not one of "
                                 f"{', '.join(MODELS)}")


def train_tokenizer(files: CorpusFiles, vocab_size: int = 30000, min_frequency: int = 2, *,
                    model: Optional[str] = None, like: Optional[VocabSource] = None,
                    lowercase: Optional[bool] = None, strip_accents: Optional[bool] = None,
                    limit_alphabet: Optional[int] = None, show_progress: bool = True,
                    exclude: Collection[str] = ()):
    """Train a tokenizer on text files (one passage per line; a single path
    or several) and return it as a transformers fast tokenizer. The files
    are streamed, never read whole.

    ``model``: "wordpiece" (BERT-style), "bpe" (byte-level, as GPT-2) or
    "unigram" (SentencePiece-style); by default the kind of ``like`` (an
    LLM's byte-level BPE trains a byte-level BPE), WordPiece without it.
    With ``like`` (the source tokenizer) of the same model type, its
    normaliser, pre-tokenizer, decoder, post-processor and special tokens
    are kept, as transformers'
    ``train_new_from_iterator`` keeps them (a Llama-3 byte-level BPE stays
    one); casing overrides (``lowercase``, ``strip_accents``) or another
    model type give the family's standard pipeline with ``like``'s casing
    and special tokens. Either way ``like``'s settings (its chat template,
    length limit, padding and truncation sides) are kept too. Without
    ``like``: BERT's special tokens and cased text. The WordPiece alphabet
    is every character seen at least twice in the corpus unless
    ``limit_alphabet`` is given: tokenizers' default of 1,000 leaves about
    15% [UNK] on Korean text. The [UNK] rate is measured
    on a sample after training and logged, with a warning above 1%.
    Passages in ``exclude`` (held out for evaluation) are not trained on.

    Raises CorpusError for a missing, unreadable or empty corpus,
    VocabxferError for an unknown model or a bad size.
    """
    from transformers import PreTrainedTokenizerFast

    if model is not None and model not in MODELS:
        raise VocabxferError(f"model {model!r} is not one of {', '.join(MODELS)}")
    paths = corpus_paths(files)
    source = load_vocab(like) if like is not None else None
    document = backend_document(source) if source is not None else None
    if model is None:
        model = model_like(source, document)
    pipeline = build_pipeline(source, document, model, lowercase, strip_accents)
    check_sizes(vocab_size, min_frequency, limit_alphabet, len(pipeline.special_tokens))
    check_corpus(paths)

    excluded = set(exclude)

    def passages():
        stream = iter_passages(paths)
        return (passage for passage in stream if passage not in excluded) if excluded \
            else stream

    trainer = trainer_for(pipeline, model, vocab_size, min_frequency, limit_alphabet, passages,
                          show_progress)
    stream = Reservoir(UNK_SAMPLE_PASSAGES)  # a sample for the [UNK] rate
    try:
        pipeline.tokenizer.train_from_iterator(batches(stream.passing(passages())),
                                               trainer=trainer)
    except VocabxferError:
        raise  # the corpus reader's own errors, as they are
    except Exception as error:  # tokenizers raises plain Exception for what it refuses
        raise VocabxferError(f"the {model} trainer refused to train with vocab_size "
                             f"{vocab_size:,} on this corpus: {error}; expected a larger "
                             "vocab_size (room for every character of the corpus)") from None
    set_post_processor(pipeline)
    unk = pipeline.roles.get("unk", "<unk>")
    report_unknown_rate(pipeline.tokenizer, stream.sample, unk)
    # Trained like the source, it keeps the source's special tokens, and so
    # its settings: a chat template names those tokens.
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=pipeline.tokenizer,
        **{f"{role}_token": token for role, token in pipeline.roles.items()
           if role in families.ROLES},
        **(source.settings if source is not None else {}))
    wrapped.name_or_path = (f"{model} tokenizer trained on {stream.count:,} passages of "
                            f"{', '.join(path.name for path in paths)}")
    wrapped.model_input_names = families.model_input_names(
        families.WORDPIECE if model == "wordpiece" else families.UNKNOWN)
    return wrapped


def json_post_processor(state: Dict[str, Any]):
    """A post-processor built from its JSON form."""
    from tokenizers import Tokenizer, models

    holder = json.loads(Tokenizer(models.BPE()).to_str())
    holder["post_processor"] = state
    return Tokenizer.from_str(json.dumps(holder)).post_processor


def unknown_rate(tokenizer, lines: List[str], unk: str) -> float:
    """The share of [UNK] among the tokens of `lines`."""
    unk_id = tokenizer.token_to_id(unk)
    if unk_id is None or not lines:
        return 0.0
    encodings = tokenizer.encode_batch(lines, add_special_tokens=False)
    total = sum(len(encoding.ids) for encoding in encodings)
    unknown = sum(encoding.ids.count(unk_id) for encoding in encodings)
    return unknown / total if total else 0.0


def report_unknown_rate(tokenizer, lines: List[str], unk: str) -> float:
    rate = unknown_rate(tokenizer, lines, unk)
    if rate > UNK_RATE_WARNING:
        logger.warning("the trained tokenizer gives %.1f%% %s tokens on its own corpus; "
                       "raise limit_alphabet or vocab_size", 100 * rate, unk)
    else:
        logger.info("the trained tokenizer gives %.2f%% %s tokens on its corpus", 100 * rate, unk)
    return rate
