"""load_vocab from every kind of source, what it detects, and its errors."""

import json

import pytest
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from vocabxfer import Vocab, VocabError, load_vocab
from vocabxfer.vocabularies import families

from .conftest import (BERT_SPECIALS, SHARED_DATA, byte_level_text, byte_level_tokenizer,
                       unigram_tokenizer, wordpiece_tokenizer)

WORDPIECE_TOKENS = BERT_SPECIALS + ["the", "cat", "##s", "sat", "##ting", "한국", "##어"]


@pytest.fixture
def vocab_txt(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(WORDPIECE_TOKENS) + "\n", encoding="utf-8")
    return path


def assert_wordpiece_vocab(vocab):
    assert vocab.tokens == tuple(WORDPIECE_TOKENS)
    assert vocab.ids["##ting"] == 9 and vocab.ids["[PAD]"] == 0
    assert vocab.family == families.WORDPIECE
    assert vocab.special_tokens_map == {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]",
                                        "sep": "[SEP]", "mask": "[MASK]"}
    assert len(vocab) == 12 and "cat" in vocab and "dog" not in vocab


def test_vocab_txt(vocab_txt):
    vocab = load_vocab(vocab_txt)
    assert_wordpiece_vocab(vocab)
    # No letter in it has an upper case, so nothing says it is cased.
    assert vocab.lowercase is True
    assert load_vocab(str(vocab_txt)).tokens == vocab.tokens


def test_vocab_txt_casing_is_detected(tmp_path):
    cased = tmp_path / "cased.txt"
    cased.write_text("[PAD]\n[UNK]\nApple\n##s\n", encoding="utf-8")
    uncased = tmp_path / "uncased.txt"
    uncased.write_text("[PAD]\n[UNK]\n[unused0]\napple\n##s\n", encoding="utf-8")
    assert load_vocab(cased).lowercase is False
    assert load_vocab(uncased).lowercase is True
    assert load_vocab(uncased, lowercase=False).lowercase is False


def test_windows_line_endings(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\r\n[UNK]\r\nhello\r\n")
    assert load_vocab(path).tokens == ("[PAD]", "[UNK]", "hello")


def test_tokenizers_tokenizer_and_json_file(tmp_path):
    tokenizer = wordpiece_tokenizer(WORDPIECE_TOKENS)
    assert_wordpiece_vocab(load_vocab(tokenizer))
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    vocab = load_vocab(path)
    assert_wordpiece_vocab(vocab)
    assert isinstance(vocab.tokenizer, Tokenizer)


def test_bert_wordpiece_implementation(vocab_txt):
    tokenizer = BertWordPieceTokenizer(str(vocab_txt), lowercase=True)
    vocab = load_vocab(tokenizer)
    assert_wordpiece_vocab(vocab)
    assert vocab.lowercase is True and vocab.strip_accents is True


def test_transformers_fast_tokenizer_and_folder(vocab_txt, tmp_path):
    # from_pretrained on a folder works on transformers 4 and 5 alike.
    tokenizer = BertTokenizerFast.from_pretrained(str(vocab_txt.parent), do_lower_case=False)
    assert_wordpiece_vocab(load_vocab(tokenizer))
    folder = tmp_path / "saved"
    tokenizer.save_pretrained(str(folder))
    vocab = load_vocab(folder)
    assert_wordpiece_vocab(vocab)
    assert vocab.name == str(folder)


def test_folder_with_only_vocab_txt_reads_casing_from_config(vocab_txt, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "vocab.txt").write_text(vocab_txt.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    vocab = load_vocab(folder)
    assert_wordpiece_vocab(vocab)
    assert vocab.lowercase is True


def test_transformers_slow_tokenizer(vocab_txt):
    transformers = pytest.importorskip("transformers")
    slow_class = getattr(transformers, "BertTokenizerLegacy", None)
    if slow_class is None:
        from transformers.models.bert import tokenization_bert
        slow_class = getattr(tokenization_bert, "BertTokenizerLegacy", None)
    if slow_class is None or hasattr(slow_class, "backend_tokenizer"):
        pytest.skip("this transformers has no slow BERT tokenizer")
    vocab = load_vocab(slow_class(vocab_file=str(vocab_txt), do_lower_case=False))
    assert_wordpiece_vocab(vocab)


def test_mapping():
    vocab = load_vocab({token: index for index, token in enumerate(WORDPIECE_TOKENS)})
    assert_wordpiece_vocab(vocab)


def test_vocab_passes_through():
    vocab = load_vocab({"a": 0})
    assert load_vocab(vocab) is vocab


def test_sentencepiece_family_and_roles():
    pieces = ["<unk>", "<s>", "</s>", "<pad>", "▁the", "▁cat", "s", "<0xE1>"]
    vocab = load_vocab(unigram_tokenizer(pieces))
    assert vocab.family == families.SENTENCEPIECE
    assert vocab.special_tokens_map == {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}


def test_byte_level_family_and_transformers_roles():
    tokens = ["<s>", "<pad>", "</s>", "<unk>", byte_level_text(" the"), "t", "h", "e",
              "<mask>"]
    backend = byte_level_tokenizer(tokens)
    assert load_vocab(backend).family == families.BYTELEVEL
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                      cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                                      unk_token="<unk>", mask_token="<mask>")
    vocab = load_vocab(wrapped)
    assert vocab.family == families.BYTELEVEL
    assert vocab.special_tokens_map == {"bos": "<s>", "eos": "</s>", "cls": "<s>", "sep": "</s>",
                              "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}


def test_family_override():
    vocab = load_vocab({"▁a": 0, "b": 1}, family="sentencepiece")
    assert vocab.family == families.SENTENCEPIECE
    with pytest.raises(VocabError, match="family 'bpe' is not one of wordpiece, sentencepiece"):
        load_vocab({"a": 0}, family="bpe")


@pytest.mark.skipif(not (SHARED_DATA / "vocab").is_dir(), reason="needs ../shared/data")
def test_real_vocabularies():
    klue = load_vocab(SHARED_DATA / "vocab" / "klue-bert-base-vocab.txt")
    assert len(klue) == 32000 and klue.tokens[:5] == tuple(BERT_SPECIALS)
    assert klue.tokens[-1] == "[unused499]" and klue.family == families.WORDPIECE
    assert klue.lowercase is False
    mbert = load_vocab(SHARED_DATA / "vocab" / "bert-base-multilingual-cased-vocab.txt")
    assert len(mbert) == 119547
    assert {role: mbert.ids[token] for role, token in mbert.special_tokens_map.items()} == \
        {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}


# ---- errors -----------------------------------------------------------------

def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("name,content,message", [
    ("empty.txt", "", r"empty\.txt: the vocabulary is empty \(expected one token per line\)"),
    ("dups.txt", "[PAD]\nhello\nworld\nhello\n",
     r"dups\.txt: token 'hello' appears twice, on lines 2 and 4; each token must appear once"),
    ("blank.txt", "[PAD]\n\nhello\n", r"blank\.txt: line 2 is empty; every line must hold a token"),
    ("latin1.txt", b"[PAD]\nhello\ncaf\xe9\n",
     r"latin1\.txt: line 3 is not valid UTF-8 \(byte 0xe9 at offset 15\)"),
    ("binary.bin", b"\x00\x01\x02PK\x03\x04",
     r"binary\.bin: holds NUL bytes, so it is not a vocabulary file"),
    ("other.json", '{"vocab_size": 3}',
     r"other\.json: is JSON but not a tokenizer\.json \(it has no \"model\" section\)"),
    ("broken.json", '{"model": ',
     r"broken\.json: is not JSON"),
    ("bad.json", b'{"model": "\xff"}',
     r"bad\.json: is not valid UTF-8 \(byte 0xff at offset 11\)"),
])
def test_file_errors(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(VocabError, match=message):
        load_vocab(path)


@pytest.mark.parametrize("mapping,message", [
    ({}, "the vocabulary is empty"),
    ({"a": 0, "b": 2}, r"token 'b' has id 2, but a vocabulary of 2 tokens needs ids 0\.\.1 "
                       "without gaps"),
    ({"a": 0, "b": 5, "c": 1}, "token 'b' has id 5"),
    ({"a": -1, "b": 1}, "token 'a' has id -1"),
    ({"a": 0, "b": "1"}, r"token 'b' has id '1', expected an int"),
    ({"a": 0, 7: 1}, "token 7 is not a string"),
])
def test_mapping_errors(mapping, message):
    with pytest.raises(VocabError, match=message):
        load_vocab(mapping)


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere" / "vocab.txt"
    with pytest.raises(VocabError, match=r"nowhere/vocab\.txt: no such file or folder"):
        load_vocab(missing)


def test_folder_without_tokenizer(tmp_path):
    with pytest.raises(VocabError, match="the folder has neither tokenizer.json nor vocab.txt"):
        load_vocab(tmp_path)


def test_unreachable_hub_id():
    # conftest sets HF_HUB_OFFLINE=1, so this fails at once without a network.
    with pytest.raises(VocabError, match="'no-such-org/no-such-model' is not a file or folder "
                                         "here, and loading it as a model hub id failed"):
        load_vocab("no-such-org/no-such-model")


def test_unsupported_object():
    with pytest.raises(VocabError, match="cannot read a vocabulary from a int"):
        load_vocab(42)


def test_vocab_is_immutable():
    vocab = load_vocab({"a": 0})
    with pytest.raises(Exception):
        vocab.family = "x"  # type: ignore[misc]
    assert isinstance(vocab, Vocab)


@pytest.mark.parametrize("build,family", [
    (lambda: unigram_tokenizer(["<unk>", "<s>", "</s>", "▁the", "s", "<0xE1>"]),
     families.SENTENCEPIECE),
    (lambda: byte_level_tokenizer(["<s>", "</s>", "<unk>", byte_level_text(" the"), "t"]),
     families.BYTELEVEL),
    (lambda: wordpiece_tokenizer(WORDPIECE_TOKENS), families.WORDPIECE),
])
def test_tokenizer_json_reads_like_the_tokenizer(tmp_path, build, family):
    tokenizer = build()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    from_file, from_object = load_vocab(path), load_vocab(tokenizer)
    assert from_file.family == from_object.family == family
    for field in ("tokens", "ids", "special_tokens_map", "all_special_tokens", "added_tokens",
                  "lowercase", "continuation_prefix"):
        assert getattr(from_file, field) == getattr(from_object, field), field
    # The Rust tokenizer is built only when asked for, from the same file.
    assert from_file.tokenizer.get_vocab() == tokenizer.get_vocab()


def test_tokenizer_json_with_an_added_token_that_contradicts_the_model(tmp_path):
    path = tmp_path / "tokenizer.json"
    wordpiece_tokenizer(WORDPIECE_TOKENS).save(str(path))
    document = json.loads(path.read_text(encoding="utf-8"))
    document["added_tokens"][0]["id"] = 7
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(VocabError, match=r"tokenizer\.json: added token '\[PAD\]' has id 7 but "
                                         "the model gives it id 0"):
        load_vocab(path)
