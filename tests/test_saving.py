"""save and save_tokenizer: folders transformers loads, written whole or
not at all, even when the process is killed in the middle."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from vocabxfer import save, transfer_model

from vocabxfer.checkpoints import atomic

from .conftest import BERT_SPECIALS, tiny_bert, wordpiece_tokenizer

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "sat", "on", "mat", "dog", "##ing", "run"]
TARGET = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "mat", "the", "cats", "running", "dog",
          "zzz"]


def test_save_writes_a_folder_transformers_loads(tmp_path):
    model = tiny_bert(len(SOURCE))
    target = wordpiece_tokenizer(TARGET)
    transfer_model(model, wordpiece_tokenizer(SOURCE), target)
    out = save(model, target, tmp_path / "out")
    loaded = AutoModelForMaskedLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert loaded.config.vocab_size == len(TARGET)
    assert tokenizer.convert_tokens_to_ids(["the", "cats"]) == [6, 7]
    assert tokenizer.cls_token == "[CLS]" and tokenizer.pad_token_id == 1
    assert (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no temporary folder left behind"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_weights_have_the_mode_of_every_other_file(tmp_path, umask):
    # safetensors creates its files 0600 whatever the umask; a folder whose
    # weights only their writer can read is no use to a team.
    model = tiny_bert(len(SOURCE))
    target = wordpiece_tokenizer(TARGET)
    transfer_model(model, wordpiece_tokenizer(SOURCE), target)
    previous = os.umask(umask)
    try:
        out = save(model, target, tmp_path / "out")
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~umask, modes
    assert set(modes) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not any(name.startswith(".") for name in modes), modes


def test_save_refuses_to_overwrite_and_replaces_only_when_asked(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    model = tiny_bert(len(SOURCE))
    with pytest.raises(FileExistsError, match="exists and is not empty; pass overwrite=True"):
        save(model, wordpiece_tokenizer(SOURCE), out)
    assert (out / "keep.txt").read_text() == "precious"
    save(model, wordpiece_tokenizer(SOURCE), out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    model = tiny_bert(len(SOURCE))

    def crash(folder, **kwargs):
        (tmp_path / "marker").write_text(str(folder))
        (Path(folder) / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save(model, wordpiece_tokenizer(SOURCE), out, overwrite=True)
    assert (out / "keep.txt").read_text() == "precious" and not (out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "out"]


# A child saves model B over model A and is killed between the two renames
# of a swap without RENAME_EXCHANGE; the next run must complete it.
KILLED_SAVE = """
import sys
sys.path.insert(0, {root!r})
from tests.conftest import KILL_BETWEEN_RENAMES, tiny_bert, wordpiece_tokenizer
from vocabxfer import save
exec(KILL_BETWEEN_RENAMES)
save(tiny_bert({size}, seed=1), wordpiece_tokenizer({tokens!r}), {out!r}, overwrite=True)
"""


@pytest.mark.slow
def test_a_save_killed_between_renames_is_completed_by_recovery(tmp_path):
    out = tmp_path / "out"
    save(tiny_bert(len(SOURCE), seed=0), wordpiece_tokenizer(SOURCE), out)
    code = KILLED_SAVE.format(root=str(Path(__file__).parents[1]), size=len(SOURCE),
                              tokens=SOURCE, out=str(out))
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not out.exists()
    atomic.recover(out)
    loaded = AutoModelForMaskedLM.from_pretrained(str(out))
    assert torch.equal(loaded.get_input_embeddings().weight,
                       tiny_bert(len(SOURCE), seed=1).get_input_embeddings().weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
