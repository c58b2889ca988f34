"""match_vocab: exact and canonical matching, within and across tokenizer
families, with exact pairs asserted."""

import pytest
import torch

from vocabxfer import VocabxferError, load_vocab, match_vocab
from vocabxfer.vocabularies.families import (BYTE, CONTINUATION, SPECIAL, WORD_START,
                                             decode_byte_level)

from .conftest import (BERT_SPECIALS, byte_level_text, byte_level_tokenizer, unigram_tokenizer,
                       wordpiece_tokenizer)


def pairs_of(token_map):
    """{target token: source token} of a token map."""
    target, source = token_map.target.tokens, token_map.source.tokens
    return {target[t]: source[s] for t, s in zip(token_map.target_ids.tolist(),
                                                  token_map.source_ids.tolist())}


def check_structure(token_map):
    target_ids = token_map.target_ids.tolist()
    assert token_map.target_ids.dtype == token_map.source_ids.dtype == torch.int64
    assert target_ids == sorted(set(target_ids)), "increasing, each target id once"
    unmatched = token_map.unmatched_target_ids.tolist()
    assert sorted(target_ids + unmatched) == list(range(len(token_map.target)))
    assert token_map.report.matched == len(target_ids) == len(token_map)
    assert token_map.report.unmatched == len(unmatched)


SOURCE_WORDPIECE = BERT_SPECIALS + ["the", "cat", "##s", "sat", "##ting", "한국", "##어", "mat"]
TARGET_WORDPIECE = BERT_SPECIALS + ["dog", "the", "##s", "##ing", "한국", "##어", "sat", "cats"]


def test_exact_wordpiece_pairs():
    token_map = match_vocab(wordpiece_tokenizer(SOURCE_WORDPIECE),
                            wordpiece_tokenizer(TARGET_WORDPIECE))
    check_structure(token_map)
    assert pairs_of(token_map) == {token: token for token in BERT_SPECIALS + [
        "the", "##s", "한국", "##어", "sat"]}
    assert token_map.target_ids.tolist() == [0, 1, 2, 3, 4, 6, 7, 9, 10, 11]
    assert token_map.source_ids.tolist() == [0, 1, 2, 3, 4, 5, 7, 10, 11, 8]
    assert token_map.unmatched_target_ids.tolist() == [5, 8, 12]
    report = token_map.report
    assert report.matched_by_kind == {SPECIAL: 5, WORD_START: 3, CONTINUATION: 2}
    assert report.unmatched_by_kind == {WORD_START: 2, CONTINUATION: 1}
    assert report.unmatched_examples == {WORD_START: ["dog", "cats"], CONTINUATION: ["##ing"]}
    text = str(report)
    assert "matched 10 of 13 target tokens (76.9%); 3 unmatched" in text
    assert report.to_dict()["matched"] == 10


def test_exact_is_case_and_marker_sensitive():
    source = {"[UNK]": 0, "Apple": 1, "##ing": 2, "▁the": 3}
    target = {"[UNK]": 0, "apple": 1, "ing": 2, "the": 3}
    assert pairs_of(match_vocab(source, target)) == {"[UNK]": "[UNK]"}


def test_canonical_wordpiece_to_sentencepiece_with_roles():
    source = wordpiece_tokenizer(SOURCE_WORDPIECE)
    pieces = ["<unk>", "<s>", "</s>", "<pad>", "<mask>", "▁the", "▁cat", "s", "ting",
              "▁한국", "어", "▁", "sat", "<0xE1>"]
    token_map = match_vocab(source, unigram_tokenizer(pieces), mode="canonical")
    check_structure(token_map)
    assert pairs_of(token_map) == {
        "<unk>": "[UNK]", "<s>": "[CLS]", "</s>": "[SEP]", "<pad>": "[PAD]",
        "<mask>": "[MASK]", "▁the": "the", "▁cat": "cat", "s": "##s", "ting": "##ting",
        "▁한국": "한국", "어": "##어"}
    # "▁" alone, "sat" (a continuation in SentencePiece, a word in WordPiece)
    # and the raw byte stay unmatched.
    assert [token_map.target.tokens[i] for i in token_map.unmatched_target_ids.tolist()] == \
        ["▁", "sat", "<0xE1>"]
    assert token_map.report.canonical_only == 11
    # The exact rule finds none of these, and pairs "sat" with "sat" although
    # one is a continuation and the other a whole word.
    assert pairs_of(match_vocab(source, unigram_tokenizer(pieces))) == {"sat": "sat"}


def test_canonical_byte_level_hangul_and_bytes():
    # A lone lead byte (0xed, of 한): not whole UTF-8. Spelled by tokenizers'
    # pre-tokenizer, whose first character stands for the first byte.
    partial = byte_level_text("한")[0]
    target_tokens = ["<s>", "</s>", "<unk>", byte_level_text(" 한국"), byte_level_text("어"),
                     byte_level_text(" the"), byte_level_text("s"), partial]
    target = byte_level_tokenizer(target_tokens)
    # Korean is stored as mojibake in the byte alphabet...
    assert target_tokens[3] == "ĠíķľêµŃ" and decode_byte_level(target_tokens[3]) == " 한국".encode()
    # ...and must still match real Hangul.
    source = wordpiece_tokenizer(SOURCE_WORDPIECE)
    token_map = match_vocab(source, target, mode="canonical")
    check_structure(token_map)
    assert pairs_of(token_map) == {"<unk>": "[UNK]", "<s>": "[CLS]", "</s>": "[SEP]",
                                   "ĠíķľêµŃ": "한국", "ìĸ´": "##어", "Ġthe": "the", "s": "##s"}
    assert token_map.report.unmatched_by_kind == {BYTE: 1}
    # The lone byte matches SentencePiece's byte-fallback piece for it.
    pieces = ["<unk>", "<0xED>", "▁the"]
    to_sentencepiece = match_vocab(unigram_tokenizer(pieces), target, mode="canonical")
    assert pairs_of(to_sentencepiece) == {partial: "<0xED>", "Ġthe": "▁the", "<unk>": "<unk>"}


def test_canonical_casefold_when_a_side_is_uncased_and_tie_breaks():
    source = {"[UNK]": 0, "Apple": 1, "APPLE": 2, "apple": 3, "Pear": 4}
    target = load_vocab({"[UNK]": 0, "apple": 1, "pear": 2, "ApplE": 3}, lowercase=True)
    token_map = match_vocab(source, target, mode="canonical")
    # The exact string wins among equal forms, else the lowest source id.
    assert pairs_of(token_map) == {"[UNK]": "[UNK]", "apple": "apple", "pear": "Pear",
                                   "ApplE": "Apple"}
    assert token_map.report.ambiguous == 2
    assert token_map.report.canonical_only == 2
    # Both sides cased: no folding.
    cased = match_vocab(source, {"[UNK]": 0, "apple": 1, "pear": 2}, mode="canonical")
    assert pairs_of(cased) == {"[UNK]": "[UNK]", "apple": "apple"}


def test_canonical_unicode_normalisation():
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    token_map = match_vocab({"[UNK]": 0, composed: 1}, {"[UNK]": 0, decomposed: 1},
                            mode="canonical")
    assert pairs_of(token_map) == {"[UNK]": "[UNK]", decomposed: composed}
    assert len(match_vocab({"[UNK]": 0, composed: 1}, {"[UNK]": 0, decomposed: 1})) == 1


def test_specials_never_match_by_string_in_canonical_mode():
    # A target whose "[CLS]" is an ordinary token must not take the source's
    # [CLS] vector: roles, not strings.
    source = wordpiece_tokenizer(SOURCE_WORDPIECE)
    target = load_vocab({"<unk>": 0, "[CLS]x": 1, "<s>": 2})
    token_map = match_vocab(source, target, mode="canonical")
    assert pairs_of(token_map) == {"<unk>": "[UNK]", "<s>": "[CLS]"}


def test_unknown_mode():
    with pytest.raises(VocabxferError,
                       match="match_vocab: mode 'fuzzy' is not one of exact, canonical"):
        match_vocab({"a": 0}, {"a": 0}, mode="fuzzy")


def test_trained_tokenizers_of_two_families(corpus_file):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train([str(corpus_file)], trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=BERT_SPECIALS, show_progress=False))
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train([str(corpus_file)], trainers.UnigramTrainer(
        vocab_size=150, special_tokens=["<pad>", "<unk>", "<s>", "</s>"], unk_token="<unk>",
        show_progress=False))
    token_map = match_vocab(wordpiece, unigram, mode="canonical")
    check_structure(token_map)
    pairs = pairs_of(token_map)
    # Expected from the raw vocabularies: "▁w" pairs with "w", "x" with "##x".
    source_vocab = wordpiece.get_vocab()
    expected = {}
    for piece in unigram.get_vocab():
        if piece.startswith("<") or piece in ("▁", "\n"):
            continue
        counterpart = piece[1:] if piece.startswith("▁") else "##" + piece
        if counterpart in source_vocab:
            expected[piece] = counterpart
    assert "▁cat" in expected and len(expected) >= 20
    assert {k: v for k, v in pairs.items() if not k.startswith("<")} == expected
    assert pairs["<unk>"] == "[UNK]" and pairs["<s>"] == "[CLS]" and pairs["<pad>"] == "[PAD]"
