"""The command line's jobs (cli/jobs.py): one transfer with refinement and
fidelity reads each input once and matches the vocabularies once,
its option objects are checked where they are made, and refinement reads
the transfer's own token map."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from vocabxfer import InitOptions, RefineSettings, TokenizerTraining, VocabxferError
from vocabxfer.cli.jobs import transfer_to_folder
from vocabxfer.models import devices
from vocabxfer.training import corpus as corpus_module
from vocabxfer.vocabularies import matching, readers

from .conftest import save_bert_folder, wordpiece_tokenizer
from .test_fidelity import SOURCE, TARGET, sentences


def test_one_transfer_reads_each_input_once_and_matches_once(tmp_path, monkeypatch):
    save_bert_folder(tmp_path / "source", SOURCE)
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(400)) + "\n", encoding="utf-8")
    reads, matches, configs, device_names = [], [], [], []
    real_read, real_match = readers.read_path, matching.match_vocab
    real_resolve = devices.resolve_device
    real_from_pretrained = AutoConfig.from_pretrained.__func__

    def counting_read(path, *args, **kwargs):
        reads.append(path.resolve())
        return real_read(path, *args, **kwargs)

    def counting_config(cls, *args, **kwargs):
        configs.append(args)
        return real_from_pretrained(cls, *args, **kwargs)

    def counting_match(*args, **kwargs):
        matches.append(args)
        return real_match(*args, **kwargs)

    def counting_resolve(device):
        if not isinstance(device, torch.device):  # a name, read into a device
            device_names.append(device)
        return real_resolve(device)

    def counting_open(file, *args, **kwargs):
        opened.append(Path(file).resolve())
        return open(file, *args, **kwargs)

    opened = []
    monkeypatch.setattr(readers, "read_path", counting_read)
    monkeypatch.setattr(AutoConfig, "from_pretrained", classmethod(counting_config))
    monkeypatch.setattr(corpus_module, "open", counting_open, raising=False)
    # Every module that matches (or resolves a device) imports the function
    # by name: count them all.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("vocabxfer."):
            for name, real, counting in (("match_vocab", real_match, counting_match),
                                         ("resolve_device", real_resolve, counting_resolve)):
                if getattr(module, name, None) is real:
                    monkeypatch.setattr(module, name, counting)
    result = transfer_to_folder(tmp_path / "source", tmp_path / "out",
                                tokenizer=tmp_path / "target.json", refine_corpus=[corpus],
                                refinement=RefineSettings(steps=3, batch_size=8),
                                device="cpu", show_progress=False)
    assert result.refinement.steps == 3 and result.fidelity is not None
    # The source tokenizer, the target tokenizer and the model's config
    # are each read once; the vocabularies are matched once; the device's
    # name is read once, every later step is given the device.
    assert sorted(map(str, reads)) == sorted(
        str((tmp_path / name).resolve()) for name in ("source", "target.json")), reads
    assert len(configs) == 1, configs
    assert len(matches) == 1, matches
    assert device_names == ["cpu"], device_names
    # The corpus is opened twice: to check it holds text before any long
    # step (its first passage), and to read it, once, in full.
    assert opened.count(corpus.resolve()) == 2, opened


@pytest.mark.parametrize("make,message", [
    (lambda: InitOptions(init="zeros"), "init 'zeros' is not one of"),
    (lambda: InitOptions(match="fuzzy"), "match 'fuzzy' is not one of"),
    (lambda: InitOptions(piece_weights="heavy"), "piece_weights 'heavy' is not one of"),
    (lambda: InitOptions(seed=-1), "seed must be an int"),
    (lambda: RefineSettings(steps=0), "refine: steps must be a positive int"),
    (lambda: RefineSettings(lr=2.0), r"refine: lr must be a finite number in \(0, 1\]"),
    (lambda: RefineSettings(objective="bits"), "refine: objective 'bits' is not one of"),
    (lambda: TokenizerTraining(model="bytes"), "the tokenizer model 'bytes' is not one of"),
])
def test_option_objects_are_checked_where_they_are_made(make, message):
    with pytest.raises(VocabxferError, match=message):
        make()


def test_options_must_be_the_option_objects(tmp_path):
    with pytest.raises(VocabxferError, match="initialisation must be an InitOptions object"):
        transfer_to_folder(tmp_path / "model", tmp_path / "out", tokenizer=tmp_path / "t.json",
                           initialisation={"init": "fvt"})
    with pytest.raises(VocabxferError, match="refinement must be a RefineSettings or None"):
        transfer_to_folder(tmp_path / "model", tmp_path / "out", tokenizer=tmp_path / "t.json",
                           refinement=True)
    assert not (tmp_path / "out").exists()
