"""The command line: each command end to end on local files, and its errors
(exit 2, one line, nothing written)."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModel, AutoTokenizer

from vocabxfer.cli.main import main

from .conftest import BERT_SPECIALS, save_bert_folder

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "sat", "on", "mat", "dog", "영화"]


@pytest.fixture
def source_folder(tmp_path):
    save_bert_folder(tmp_path / "source", SOURCE)
    return tmp_path / "source"


def test_match_prints_the_report(source_folder, tmp_path, capsys):
    target = tmp_path / "target.txt"
    target.write_text("\n".join(BERT_SPECIALS + ["the", "dogs", "##s"]) + "\n")
    assert main(["match", str(source_folder), str(target)]) == 0
    out = capsys.readouterr().out
    assert "matched 7 of 8 target tokens (87.5%); 1 unmatched" in out
    assert main(["match", str(source_folder), str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matched"] == 7


def test_transfer_with_a_corpus_writes_a_loadable_folder(source_folder, corpus_file, tmp_path,
                                                         capsys):
    out = tmp_path / "out"
    code = main(["transfer", "--model", str(source_folder), "--corpus", str(corpus_file),
                 "--out", str(out), "--vocab-size", "120"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "initialised" in printed and f"wrote {out}" in printed
    model = AutoModel.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert model.config.vocab_size == len(tokenizer) <= 120
    assert "[UNK]" not in tokenizer.tokenize("영화 정말 좋아요")


def test_transfer_with_a_tokenizer_and_train_tokenizer(source_folder, corpus_file, tmp_path):
    tokenizer_dir = tmp_path / "tok"
    assert main(["train-tokenizer", "--corpus", str(corpus_file), "--out", str(tokenizer_dir),
                 "--vocab-size", "100", "--like", str(source_folder)]) == 0
    assert (tokenizer_dir / "tokenizer.json").is_file()
    assert main(["transfer", "--model", str(source_folder), "--tokenizer", str(tokenizer_dir),
                 "--out", str(tmp_path / "out"), "--init", "mean", "--match", "canonical"]) == 0
    assert AutoModel.from_pretrained(str(tmp_path / "out")).config.vocab_size == \
        len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))


def run_failing(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    # Progress bars may have drawn before; the error is one line, the last.
    errors = [line for line in err.splitlines() if line.startswith("vocabxfer: error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert "Traceback" not in err
    return errors[0]


def test_transfer_errors(source_folder, corpus_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    message = run_failing(["transfer", "--model", str(source_folder), "--corpus",
                           str(corpus_file), "--out", str(out)], capsys)
    assert "exists and is not empty; pass overwrite=True (--force) to replace it" in message
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    fresh = tmp_path / "fresh"
    message = run_failing(["transfer", "--model", str(source_folder), "--corpus",
                           str(tmp_path / "nope.txt"), "--out", str(fresh)], capsys)
    assert "nope.txt: no such corpus file" in message
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    message = run_failing(["transfer", "--model", str(source_folder), "--corpus", str(empty),
                           "--out", str(fresh)], capsys)
    assert "has no text" in message
    big = tmp_path / "big.txt"
    big.write_text("\n".join(SOURCE + [f"w{i}" for i in range(40)]) + "\n")
    message = run_failing(["transfer", "--model", str(source_folder), "--tokenizer",
                           str(tmp_path / "missing-tokenizer"), "--out", str(fresh)], capsys)
    assert "missing-tokenizer: no such file or folder" in message
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["source", "out", "corpus.txt", "empty.txt", "big.txt"])


def test_mismatched_source_tokenizer(tmp_path, capsys):
    # A model folder whose tokenizer is bigger than its embeddings.
    save_bert_folder(tmp_path / "model", SOURCE)
    (tmp_path / "model" / "tokenizer.json").unlink()
    (tmp_path / "model" / "vocab.txt").write_text("\n".join(SOURCE + ["x", "y", "z"]) + "\n")
    message = run_failing(["transfer", "--model", str(tmp_path / "model"), "--tokenizer",
                           str(tmp_path / "model" / "vocab.txt"), "--out",
                           str(tmp_path / "out")], capsys)
    assert "tokens but the model's input embeddings have 13 rows" in message
    assert not (tmp_path / "out").exists()


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "vocabxfer", "transfer", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--init {fvt,mean,normal,random}" in result.stdout
