"""Every bad input the adversarial run found, as a table: through the API it
raises one of vocabxfer's errors with a message that says what was wrong;
through the command line it exits 2 with one 'vocabxfer: error:' line, no
traceback, and nothing written."""

import json
from pathlib import Path

import pytest

import vocabxfer
from vocabxfer import CorpusError, ModelError, OutputError, VocabError, VocabxferError
from vocabxfer.cli.main import main
from vocabxfer.models.loading import load_model

from .conftest import BERT_SPECIALS, CORPUS, save_bert_folder, tiny_bert, wordpiece_tokenizer

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "sat", "on", "mat", "dog"]


@pytest.fixture
def place(tmp_path):
    """A folder with a source model, a corpus and broken files to point at."""
    save_bert_folder(tmp_path / "model", SOURCE)
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    (tmp_path / "control.txt").write_text("\x01\x02\n\x07\x1b\x00\x7f\u200b\n" * 20,
                                          encoding="utf-8")
    wordpiece_tokenizer(SOURCE).save(str(tmp_path / "good.json"))
    document = json.loads((tmp_path / "good.json").read_text(encoding="utf-8"))
    strings = dict(document, added_tokens=["[PAD]", "[UNK]"])
    (tmp_path / "string-added.json").write_text(json.dumps(strings), encoding="utf-8")
    string_ids = dict(document, added_tokens=[dict(token, id=str(token["id"]))
                                              for token in document["added_tokens"]])
    (tmp_path / "string-ids.json").write_text(json.dumps(string_ids), encoding="utf-8")
    odd = tmp_path / "odd-config"
    save_bert_folder(odd, SOURCE)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps(dict(config, architectures=["AutoTokenizer"])))
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "data").mkdir()  # inputs that an output folder might hold
    (tmp_path / "data" / "corpus.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    wordpiece_tokenizer(SOURCE).save(str(tmp_path / "data" / "good.json"))
    return tmp_path


def listing(root: Path):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


# (name, call(place), error class, message)
API_CASES = [
    ("vocab_size -1", lambda p: vocabxfer.train_tokenizer(p / "corpus.txt", vocab_size=-1),
     VocabxferError, r"vocab_size must be an int larger than the 5 special tokens and at most "
                     r"16,777,216, got -1"),
    ("vocab_size 0", lambda p: vocabxfer.train_tokenizer(p / "corpus.txt", vocab_size=0),
     VocabxferError, r"vocab_size must be an int larger than the 5 special tokens and at most "
                     r"16,777,216, got 0"),
    ("min_frequency -1", lambda p: vocabxfer.train_tokenizer(p / "corpus.txt", vocab_size=100,
                                                            min_frequency=-1),
     VocabxferError, r"min_frequency must be an int of at least 0 and at most 4,294,967,296, "
                     r"got -1"),
    ("control characters only", lambda p: vocabxfer.train_tokenizer(p / "control.txt"),
     CorpusError, r"has no text \(only empty lines, white space or control characters\)"),
    ("device bogus", lambda p: vocabxfer.transfer_model(tiny_bert(len(SOURCE)), SOURCE_VOCAB,
                                                        SOURCE_VOCAB, device="bogus"),
     VocabxferError, r"device 'bogus' is not a device name torch knows"),
    ("device meta", lambda p: vocabxfer.transfer_model(tiny_bert(len(SOURCE)), SOURCE_VOCAB,
                                                       SOURCE_VOCAB, device="meta"),
     VocabxferError, r"device 'meta' holds no data"),
    ("added_tokens are strings", lambda p: vocabxfer.load_vocab(p / "string-added.json"),
     VocabError, r"string-added\.json: added_tokens\[0\] is '\[PAD\]', expected an object"),
    ("added token ids are strings", lambda p: vocabxfer.load_vocab(p / "string-ids.json"),
     VocabError, r"string-ids\.json: added token '\[PAD\]' has id '0', expected an int"),
    ("architecture is not a model", lambda p: load_model(p / "odd-config"),
     ModelError, r"config\.json names the architecture 'AutoTokenizer', which is not a "
                 r"transformers model class"),
    ("missing model folder", lambda p: load_model(p / "nowhere"),
     ModelError, r"nowhere: no such model folder"),
    ("hub id offline", lambda p: load_model("no-such-org/no-such-model"),
     ModelError, r"no-such-org/no-such-model: could not read the model's config \([A-Za-z]+: "
                 r"[^\n]*\)$"),
    ("output under a file", lambda p: vocabxfer.save(tiny_bert(len(SOURCE)), SOURCE_VOCAB,
                                                     p / "a-file" / "out"),
     OutputError, r"a-file is a file, so .* cannot be created under it"),
    ("refine max_length 1", lambda p: vocabxfer.refine(
        tiny_bert(len(SOURCE)), tiny_bert(len(SOURCE)),
        vocabxfer.match_vocab(SOURCE_VOCAB, SOURCE_VOCAB),
        ["the cat sat"] * 10, steps=1, max_length=1),
     VocabxferError, r"refine: max_length is 1, which leaves no token to learn from"),
    ("output inside the input", lambda p: vocabxfer.transfer_to_folder(
        p / "model", p / "model" / "out", tokenizer=p / "good.json"),
     OutputError, r"is inside the input model folder"),
]
SOURCE_VOCAB = {token: index for index, token in enumerate(SOURCE)}


@pytest.mark.parametrize("name,call,error,message", API_CASES, ids=[c[0] for c in API_CASES])
def test_api(place, name, call, error, message):
    before = listing(place)
    with pytest.raises(error, match=message):
        call(place)
    assert listing(place) == before


def test_single_corpus_path_is_accepted(place):
    tokenizer = vocabxfer.train_tokenizer(str(place / "corpus.txt"), vocab_size=120,
                                          show_progress=False)
    assert len(tokenizer) <= 120 and tokenizer.tokenize("the cat") == ["the", "cat"]


@pytest.mark.parametrize("content", [b"\xef\xbb\xbf[PAD]\n[UNK]\nhello\n",
                                     b"[PAD]\r[UNK]\rhello\r", b"[PAD]\r\n[UNK]\nhello"])
def test_vocab_txt_byte_order_mark_and_line_ends(tmp_path, content):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    vocab = vocabxfer.load_vocab(path)
    assert vocab.tokens == ("[PAD]", "[UNK]", "hello")
    assert vocab.special_tokens_map == {"pad": "[PAD]", "unk": "[UNK]"}


def t(place, *words):
    return [word.format(p=place) for word in words]


# (name, arguments): every one must exit 2 with one line and write nothing.
CLI_CASES = [
    ("vocab size -1", ("transfer", "--model", "{p}/model", "--corpus", "{p}/corpus.txt",
                       "--out", "{p}/out", "--vocab-size", "-1"),
     "vocab_size must be an int larger than the 5 special tokens and at most 16,777,216, got -1"),
    ("min frequency -1", ("transfer", "--model", "{p}/model", "--corpus", "{p}/corpus.txt",
                          "--out", "{p}/out", "--min-frequency", "-1"),
     "min_frequency must be an int of at least 0 and at most 4,294,967,296, got -1"),
    ("vocab size 0, train-tokenizer", ("train-tokenizer", "--corpus", "{p}/corpus.txt",
                                       "--out", "{p}/out", "--vocab-size", "0"),
     "vocab_size must be an int larger than the 5 special tokens and at most 16,777,216, got 0"),
    ("device bogus", ("transfer", "--model", "{p}/model", "--tokenizer", "{p}/good.json",
                      "--out", "{p}/out", "--device", "bogus"),
     "device 'bogus' is not a device name torch knows"),
    ("device meta", ("transfer", "--model", "{p}/model", "--tokenizer", "{p}/good.json",
                     "--out", "{p}/out", "--device", "meta"),
     "device 'meta' holds no data"),
    ("added tokens are strings, match", ("match", "{p}/model", "{p}/string-added.json"),
     "added_tokens[0] is '[PAD]', expected an object"),
    ("added tokens are strings, transfer", ("transfer", "--model", "{p}/model", "--tokenizer",
                                            "{p}/string-added.json", "--out", "{p}/out"),
     "added_tokens[0] is '[PAD]', expected an object"),
    ("added tokens are strings, like", ("train-tokenizer", "--corpus", "{p}/corpus.txt",
                                        "--out", "{p}/out", "--like", "{p}/string-added.json"),
     "added_tokens[0] is '[PAD]', expected an object"),
    ("string ids", ("match", "{p}/model", "{p}/string-ids.json"),
     "added token '[PAD]' has id '0', expected an int"),
    ("architecture is not a model", ("transfer", "--model", "{p}/odd-config", "--tokenizer",
                                     "{p}/good.json", "--out", "{p}/out"),
     "names the architecture 'AutoTokenizer', which is not a transformers model class"),
    ("missing model", ("transfer", "--model", "{p}/nowhere", "--tokenizer", "{p}/good.json",
                       "--out", "{p}/out"), "nowhere: no such model folder"),
    ("out under a file", ("transfer", "--model", "{p}/model", "--tokenizer", "{p}/good.json",
                          "--out", "{p}/a-file/out"), "a-file is a file, so"),
    ("hub id offline", ("transfer", "--model", "no-such-org/no-such-model", "--tokenizer",
                        "{p}/good.json", "--out", "{p}/out"),
     "no-such-org/no-such-model: could not read the model's config"),
    ("control characters only", ("train-tokenizer", "--corpus", "{p}/control.txt", "--out",
                                 "{p}/out"), "has no text"),
    ("out inside the model", ("transfer", "--model", "{p}/model", "--tokenizer",
                              "{p}/good.json", "--out", "{p}/model/new", "--force"),
     "is inside the input model folder"),
    ("vocab size 10**12", ("train-tokenizer", "--corpus", "{p}/corpus.txt", "--out", "{p}/out",
                           "--vocab-size", str(10 ** 12)),
     f"at most 16,777,216, got {10 ** 12}"),
    ("vocab size 2**70", ("transfer", "--model", "{p}/model", "--corpus", "{p}/corpus.txt",
                          "--out", "{p}/out", "--vocab-size", str(2 ** 70)),
     f"at most 16,777,216, got {2 ** 70}"),
    ("min frequency 2**70", ("train-tokenizer", "--corpus", "{p}/corpus.txt", "--out",
                             "{p}/out", "--min-frequency", str(2 ** 70)),
     f"min_frequency must be an int of at least 0 and at most 4,294,967,296, got {2 ** 70}"),
    ("seed 2**70", ("transfer", "--model", "{p}/model", "--tokenizer", "{p}/good.json",
                    "--out", "{p}/out", "--seed", str(2 ** 70)),
     f"seed must be an int in [0, 2**63), got {2 ** 70}"),
    ("unigram too small", ("train-tokenizer", "--corpus", "{p}/corpus.txt", "--out", "{p}/out",
                           "--tokenizer-model", "unigram", "--vocab-size", "6"),
     "the unigram trainer refused to train with vocab_size 6 on this corpus: The vocabulary is "
     "not large enough to contain all chars"),
    ("plot without refinement", ("transfer", "--model", "{p}/model", "--tokenizer",
                                 "{p}/good.json", "--out", "{p}/out", "--plot", "{p}/loss.png"),
     "--plot is given but no refinement is asked for"),
    ("refine corpus without refinement", ("transfer", "--model", "{p}/model", "--tokenizer",
                                          "{p}/good.json", "--out", "{p}/out",
                                          "--refine-corpus", "{p}/corpus.txt"),
     "refine_corpus (--refine-corpus) is given but no refinement is asked for"),
    ("plot in an unknown format", ("transfer", "--model", "{p}/model", "--corpus",
                                   "{p}/corpus.txt", "--out", "{p}/out", "--refine-steps", "2",
                                   "--plot", "{p}/loss.xyz"),
     "has no image suffix matplotlib writes"),
    ("plot under a file", ("transfer", "--model", "{p}/model", "--corpus", "{p}/corpus.txt",
                           "--out", "{p}/out", "--refine-steps", "2", "--plot",
                           "{p}/a-file/loss.png"), "a-file is a file, so"),
    ("plot is a folder", ("transfer", "--model", "{p}/model", "--corpus", "{p}/corpus.txt",
                          "--out", "{p}/out", "--refine-steps", "2", "--plot", "{p}/model"),
     "model is a folder; expected a file name such as loss.png"),
]


# --force replaces --out: never when --out holds (or is) an input of the run,
# and every output path is checked before the first long step.
CLI_CASES += [
    ("--out holds the corpus", ("transfer", "--model", "{p}/model", "--corpus",
                                "{p}/data/corpus.txt", "--out", "{p}/data", "--force"),
     "the output folder {p}/data holds the corpus file {p}/data/corpus.txt"),
    ("--out holds the refine corpus", ("transfer", "--model", "{p}/model", "--tokenizer",
                                       "{p}/good.json", "--refine-corpus", "{p}/data/corpus.txt",
                                       "--refine-steps", "2", "--out", "{p}/data", "--force"),
     "holds the refine corpus file"),
    ("--out holds the tokenizer", ("transfer", "--model", "{p}/model", "--tokenizer",
                                   "{p}/data/good.json", "--out", "{p}/data", "--force"),
     "holds the target tokenizer"),
    ("--plot inside --out", ("transfer", "--model", "{p}/model", "--tokenizer", "{p}/good.json",
                             "--refine-corpus", "{p}/corpus.txt", "--refine-steps", "2",
                             "--out", "{p}/new", "--plot", "{p}/new/loss.png"),
     "the output folder {p}/new holds the loss plot"),
    ("--plot is --out", ("transfer", "--model", "{p}/model", "--tokenizer", "{p}/good.json",
                         "--refine-corpus", "{p}/corpus.txt", "--refine-steps", "2",
                         "--out", "{p}/new.png", "--plot", "{p}/new.png"),
     "the output folder {p}/new.png is the loss plot"),
    ("--plot where no file can be made", ("transfer", "--model", "{p}/model", "--tokenizer",
                                          "{p}/good.json", "--refine-corpus", "{p}/corpus.txt",
                                          "--refine-steps", "2", "--out", "{p}/new", "--plot",
                                          "/proc/vocabxfer-no-such/loss.png"),
     "/proc/vocabxfer-no-such/loss.png cannot be written: /proc does not take new files"),
]


@pytest.mark.parametrize("name,arguments,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli(place, capsys, name, arguments, message):
    before = listing(place)
    code = main(t(place, *arguments))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("vocabxfer: error: ")]
    assert len(errors) == 1 and captured.err.rstrip().endswith(errors[0]), captured.err
    assert "Traceback" not in captured.err
    assert message.format(p=place) in errors[0], errors[0]
    assert listing(place) == before


@pytest.mark.parametrize("out", ["", " ", ".", "..", "/", "~"])
def test_output_that_would_replace_the_working_or_home_folder(place, capsys, monkeypatch, out):
    """An unset $OUT (--out "") with --force must not empty the working folder."""
    work = place / "work"
    work.mkdir()
    (work / "precious.txt").write_text("keep me")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work))
    before = listing(place)
    code = main(["transfer", "--model", str(place / "model"), "--tokenizer",
                 str(place / "good.json"), "--out", out, "--force"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "vocabxfer: error: " in err, err
    assert "names no folder" in err or "replacing it would delete it" in err, err
    assert listing(place) == before and (work / "precious.txt").read_text() == "keep me"
    with pytest.raises(OutputError):
        vocabxfer.save(tiny_bert(len(SOURCE)), SOURCE_VOCAB, out, overwrite=True)
    assert listing(place) == before


def test_cli_verbose_shows_the_traceback(place, capsys):
    code = main(["-v", "transfer", "--model", str(place / "nowhere"), "--tokenizer",
                 str(place / "good.json"), "--out", str(place / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and err.rstrip().endswith(
        f"vocabxfer: error: {place / 'nowhere'}: no such model folder (expected a folder with "
        "config.json and weights, or a hub id)")


def test_cli_lets_a_bug_show_its_traceback(place, monkeypatch):
    # Only vocabxfer's errors and OSError are bad input; a ValueError from
    # inside a library is a bug and must not be hidden as one.
    from vocabxfer.vocabularies import matching

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(matching, "match_vocab", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["match", str(place / "model"), str(place / "good.json")])
