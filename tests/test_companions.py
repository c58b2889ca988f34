"""A sentence-transformers model's companion files (checkpoints/companions.py):
modules.json and the vocabulary-free modules it names are carried into the
moved model's folder as they are, streamed or loaded whole; a modules.json
or a companion that is not what it says is refused before anything is
written, and pickle files are never carried."""

import json

import pytest
import torch
from safetensors.torch import save_file

import vocabxfer
from vocabxfer import ModelError, RefineSettings

from .conftest import BERT_SPECIALS, save_bert_folder, wordpiece_tokenizer

SOURCE = BERT_SPECIALS + ["the", "cat", "sat", "on", "mat", "dog", "##s", "a", "and", "red"]
TARGET = SOURCE + ["cats", "dogs", "running"]
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 3, "name": "3", "path": "3_Normalize",
     "type": "sentence_transformers.models.Normalize"},
]
CARRIED = ["modules.json", "sentence_bert_config.json", "1_Pooling/config.json",
           "2_Dense/config.json", "2_Dense/model.safetensors"]


def sentence_model(folder, modules=MODULES):
    """A sentence-transformers folder: a tiny BERT at its root, mean pooling,
    a dense layer (safetensors, and a stray pickle), and normalisation
    without files."""
    save_bert_folder(folder, SOURCE)
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 48, "do_lower_case": False}), encoding="utf-8")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text(
        json.dumps({"in_features": 32, "out_features": 8, "bias": True}))
    save_file({"linear.weight": torch.randn(8, 32, generator=torch.Generator().manual_seed(0)),
               "linear.bias": torch.zeros(8)}, str(folder / "2_Dense" / "model.safetensors"))
    (folder / "2_Dense" / "pytorch_model.bin").write_bytes(b"not carried")
    return folder


@pytest.mark.parametrize("refine", [False, True], ids=["streamed", "in-memory"])
def test_the_modules_are_carried_as_they_are(tmp_path, corpus_file, refine):
    source = sentence_model(tmp_path / "source")
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    options = dict(refinement=RefineSettings(steps=1, batch_size=4),
                   refine_corpus=[corpus_file]) if refine else {}
    out = tmp_path / "out"
    vocabxfer.transfer_to_folder(source, out, tokenizer=tmp_path / "target.json",
                                 show_progress=False, **options)
    for name in CARRIED:
        assert (out / name).read_bytes() == (source / name).read_bytes(), name
    assert not (out / "2_Dense" / "pytorch_model.bin").exists()
    assert not (out / "3_Normalize").exists()  # none in the source either
    assert vocabxfer.load_model(out).get_input_embeddings().weight.shape[0] == len(TARGET)


def test_a_folder_without_modules_carries_nothing_more(tmp_path):
    save_bert_folder(tmp_path / "source", SOURCE)
    (tmp_path / "source" / "README.md").write_text("the source's card", encoding="utf-8")
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    out = tmp_path / "out"
    vocabxfer.transfer_to_folder(tmp_path / "source", out, tokenizer=tmp_path / "target.json",
                                 show_progress=False)
    assert sorted(path.name for path in out.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.parametrize("change,message", [
    (lambda folder: (folder / "modules.json").write_text('{"path": ""}'),
     "expected a list of modules, each with a path"),
    (lambda folder: (folder / "modules.json").write_text(json.dumps(
        MODULES + [{"path": "../elsewhere", "type": "sentence_transformers.models.Dense"}])),
     "the module path '../elsewhere' is not a folder inside the model folder"),
    (lambda folder: (folder / "modules.json").write_text(json.dumps(
        MODULES + [{"path": "/etc", "type": "sentence_transformers.models.Dense"}])),
     "the module path '/etc' is not a folder inside"),
    (lambda folder: (folder / "modules.json").write_text(json.dumps(
        MODULES + [{"path": ".", "type": "sentence_transformers.models.Dense"}])),
     r"the module path '\.' is not a folder inside"),
    (lambda folder: (folder / "modules.json").write_text(json.dumps(
        MODULES + [{"path": "0_Transformer",
                    "type": "sentence_transformers.models.Transformer"}])),
     "is a Transformer, whose files depend on the vocabulary"),
    (lambda folder: (folder / "2_Dense" / "model.safetensors").write_bytes(b"\x00" * 4),
     "is not a safetensors file"),
    (lambda folder: (folder / "1_Pooling" / "config.json").write_text("{not json"),
     "is not valid JSON"),
])
@pytest.mark.parametrize("refine", [False, True], ids=["streamed", "in-memory"])
def test_a_bad_companion_is_refused_before_anything_is_written(tmp_path, corpus_file, change,
                                                               message, refine):
    source = sentence_model(tmp_path / "source")
    change(source)
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    options = dict(refinement=RefineSettings(steps=1, batch_size=4),
                   refine_corpus=[corpus_file]) if refine else {}
    with pytest.raises(ModelError, match=message):
        vocabxfer.transfer_to_folder(source, tmp_path / "out",
                                     tokenizer=tmp_path / "target.json", show_progress=False,
                                     **options)
    assert not (tmp_path / "out").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_a_companion_link_that_leaves_the_folder_is_refused(tmp_path):
    source = sentence_model(tmp_path / "source")
    secret = tmp_path / "secret.json"
    secret.write_text('{"key": "not yours"}', encoding="utf-8")
    (source / "1_Pooling" / "config.json").unlink()
    (source / "1_Pooling" / "config.json").symlink_to(secret)
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    with pytest.raises(ModelError, match="outside the model folder"):
        vocabxfer.transfer_to_folder(source, tmp_path / "out",
                                     tokenizer=tmp_path / "target.json", show_progress=False)
    assert not (tmp_path / "out").exists()
