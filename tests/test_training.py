"""train_tokenizer: families, casing that follows the source, the alphabet
for Hangul, and corpus errors."""

import logging

import pytest

from vocabxfer import CorpusError, load_vocab, train_tokenizer
from vocabxfer.vocabularies import families
from vocabxfer.training.tokenizer import corpus_alphabet_size, unknown_rate

from .conftest import BERT_SPECIALS, CORPUS, wordpiece_tokenizer


def test_wordpiece_follows_an_uncased_source(corpus_file):
    source = wordpiece_tokenizer(BERT_SPECIALS + ["the"], lowercase=True)
    tokenizer = train_tokenizer([corpus_file], vocab_size=300, like=source, show_progress=False)
    vocab = load_vocab(tokenizer)
    assert vocab.family == families.WORDPIECE and vocab.lowercase is True
    assert vocab.tokens[:5] == tuple(BERT_SPECIALS)
    assert tokenizer.tokenize("The CAT") == ["the", "cat"]
    assert tokenizer("the cat")["input_ids"][0] == vocab.ids["[CLS]"]


def test_hangul_alphabet_comes_from_the_corpus(corpus_file, caplog):
    alphabet = corpus_alphabet_size(CORPUS)
    assert alphabet == len({char for line in CORPUS for char in line if not char.isspace()})
    tokenizer = train_tokenizer([corpus_file], vocab_size=300, show_progress=False)
    backend = tokenizer.backend_tokenizer
    assert unknown_rate(backend, CORPUS, "[UNK]") == 0.0
    # A small alphabet leaves Hangul unknown: measured, and warned about.
    with caplog.at_level(logging.WARNING, logger="vocabxfer.training.tokenizer"):
        small = train_tokenizer([corpus_file], vocab_size=300, limit_alphabet=10,
                                show_progress=False)
    assert unknown_rate(small.backend_tokenizer, CORPUS, "[UNK]") > 0.05
    assert any("[UNK] tokens on its own corpus" in record.message for record in caplog.records)


@pytest.mark.parametrize("model,family", [("bpe", families.BYTELEVEL),
                                          ("unigram", families.SENTENCEPIECE)])
def test_other_families(corpus_file, model, family):
    source = load_vocab({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5})
    tokenizer = train_tokenizer([corpus_file], vocab_size=200, model=model, like=source,
                                show_progress=False)
    vocab = load_vocab(tokenizer)
    assert vocab.family == family
    roles = vocab.special_tokens_map
    assert {role: vocab.tokens.index(token) < 5 for role, token in roles.items()} == \
        {role: True for role in roles}
    assert tokenizer.decode(tokenizer("한국 영화")["input_ids"], skip_special_tokens=True) \
        .replace(" ", "") == "한국영화"


def test_corpus_errors(tmp_path):
    with pytest.raises(CorpusError, match="no corpus files were given"):
        train_tokenizer([])
    with pytest.raises(CorpusError, match=r"missing\.txt: no such corpus file"):
        train_tokenizer([tmp_path / "missing.txt"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(CorpusError, match=r"the corpus \(.*empty\.txt\) has no text"):
        train_tokenizer([empty])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9\n")
    with pytest.raises(CorpusError, match=r"latin1\.txt: is not UTF-8 text \(byte offset 3\)"):
        train_tokenizer([latin1])
    with pytest.raises(ValueError, match="model 'wordlevel' is not one of wordpiece, bpe, unigram"):
        train_tokenizer([empty], model="wordlevel")


def test_the_kind_follows_the_like_tokenizer(corpus_file):
    """An LLM's byte-level BPE as `like` trains a byte-level BPE (not a
    WordPiece, which would drop the spaces the LLM predicts)."""
    from vocabxfer import load_vocab, train_tokenizer

    from .conftest import byte_level_text, byte_level_tokenizer, unigram_tokenizer

    byte_level = byte_level_tokenizer(
        ["<|endoftext|>"] + [byte_level_text(chr(byte)) for byte in range(32, 127)])
    trained = train_tokenizer(corpus_file, 200, like=byte_level, show_progress=False)
    assert load_vocab(trained).family == "bytelevel"
    assert trained.decode(trained("the cat sat")["input_ids"]) == "the cat sat"
    unigram = unigram_tokenizer(["<unk>", "<s>", "</s>", "▁the", "▁cat", "▁", "t", "h", "e"])
    assert "Unigram" in train_tokenizer(corpus_file, 80, like=unigram, show_progress=False) \
        .backend_tokenizer.to_str()[:3000]
    assert load_vocab(train_tokenizer(corpus_file, 120, show_progress=False)).family == \
        "wordpiece"
