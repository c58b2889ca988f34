"""Folders that may be a stranger's (untrusted.py): links that leave the
model or tokenizer folder, configs that lie about the weights or hold values
no model has, files that never end. Each is refused through the API and the
command line with one line naming what was wrong; nothing is written at the
output, nothing outside changes, and no byte of an outside file reaches the
output."""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from vocabxfer import VocabxferError, transfer_checkpoint
from vocabxfer.checkpoints.streamed import INDEX_FILE
from vocabxfer.cli.main import main
from vocabxfer.checkpoints.untrusted import MAX_JSON_DEPTH, check_config_document, json_depth

from .test_untrusted_checkpoints import (  # noqa: F401
    file_hashes, one_error_line, pristine, transfer_is_refused)

SECRET = "AKIA-the-neighbours-secret-key"


def link_out(name):
    """Replace the folder's `name` by a link to a file outside it that holds
    the same content plus a secret."""
    def crafted(folder: Path, outside: Path) -> None:
        original = json.loads((folder / name).read_text())
        if isinstance(original, dict):
            original["secret"] = SECRET
        planted = outside.parent / f"planted-{name}"
        planted.write_text(json.dumps(original))
        (folder / name).unlink()
        (folder / name).symlink_to(planted)
    return crafted


def edit_json(name, change):
    def crafted(folder: Path, outside: Path) -> None:
        path = folder / name
        document = json.loads(path.read_text()) if path.exists() else {}
        document = change(document)
        path.write_text(document if isinstance(document, str) else json.dumps(document))
    return crafted


def set_field(field, value):
    return lambda document: dict(document, **{field: value})


def nested(depth):
    return lambda document: "[" * depth + "]" * depth


def tie_lie(folder: Path, outside: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    assert config.get("tie_word_embeddings") is False  # the fixture's Llama is untied
    config["tie_word_embeddings"] = True
    (folder / "config.json").write_text(json.dumps(config))


def shard_named_like_an_output_file(folder: Path, outside: Path) -> None:
    index = json.loads((folder / INDEX_FILE).read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    (folder / shard).rename(folder / "tokenizer.json.safe")
    index["weight_map"] = {name: ("tokenizer.json.safe" if file == shard else file)
                           for name, file in index["weight_map"].items()}
    (folder / INDEX_FILE).write_text(json.dumps(index))


def fifo_as(name):
    def crafted(folder: Path, outside: Path) -> None:
        (folder / name).unlink()
        os.mkfifo(folder / name)
    return crafted


# (name, crafted(folder, outside), message)
CASES = [
    ("config.json links outside", link_out("config.json"),
     r"config.json is a link to .*, outside the model folder"),
    ("generation_config.json links outside", link_out("generation_config.json"),
     r"generation_config.json is a link to .*, outside the model folder"),
    ("tokenizer.json links outside", link_out("tokenizer.json"),
     r"tokenizer.json is a link to .*, outside the model folder"),
    ("config says tied over an untied head", tie_lie,
     r"config.json makes .* one tensor with .* but the checkpoint stores them with "
     r"different values"),
    ("a shard named like a tokenizer file", shard_named_like_an_output_file,
     r"names the weight file 'tokenizer.json.safe', expected a file name ending in "
     r"\.safetensors"),
    ("config.json is a FIFO", fifo_as("config.json"), r"is not a regular file"),
] + [
    (f"vocab_size {value!r}", edit_json("config.json", set_field("vocab_size", value)),
     r"vocab_size is .*; expected a positive int")
    for value in (0, -5, "600", 600.0, None, True)
] + [
    ("hidden_size 0", edit_json("config.json", set_field("hidden_size", 0)),
     r"hidden_size is 0; expected a positive int"),
    ("hidden_size -32", edit_json("config.json", set_field("hidden_size", -32)),
     r"hidden_size is -32; expected a positive int"),
    ("num_attention_heads 0", edit_json("config.json", set_field("num_attention_heads", 0)),
     r"num_attention_heads is 0; expected a positive int"),
    ("pad_token_id past the vocabulary",
     edit_json("config.json", set_field("pad_token_id", 10 ** 6)),
     r"pad_token_id is 1000000; expected null or a token id"),
    ("eos_token_id list with a string",
     edit_json("generation_config.json", set_field("eos_token_id", [1, "2"])),
     r"eos_token_id is \[1, '2'\]; expected null or a token id"),
    ("tie_word_embeddings a string",
     edit_json("config.json", set_field("tie_word_embeddings", "yes")),
     r"tie_word_embeddings is 'yes'; expected true or false"),
    ("generation_config.json a list", edit_json("generation_config.json", lambda d: [d]),
     r"generation_config.json: is a JSON list; expected an object"),
    ("config.json a list", edit_json("config.json", lambda d: [d]),
     r"config.json: is a JSON list; expected an object"),
    ("a quantization_config left by a conversion",
     edit_json("config.json", set_field("quantization_config",
                                        {"quant_method": "gguf", "gguf_file": "m.gguf"})),
     r"declares quantization_config \(gguf\); vocabxfer moves float checkpoints"),
] + [
    (f"{name} nested 50,000 deep", edit_json(name, nested(50_000)),
     r"is nested deeper than any|is not a safetensors index|not valid JSON")
    for name in ("config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", INDEX_FILE)
]


def crafted_place(pristine, tmp_path, crafted) -> Path:  # noqa: F811
    shutil.copytree(pristine / "sharded", tmp_path / "model")
    shutil.copy(pristine / "target.json", tmp_path / "target.json")
    if not (tmp_path / "model" / "generation_config.json").exists():
        (tmp_path / "model" / "generation_config.json").write_text(
            json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    crafted(tmp_path / "model", tmp_path / "outside")
    return tmp_path


def output_leaks(place: Path) -> bool:
    out = place / "out"
    return out.exists() and any(SECRET in path.read_text(errors="ignore")
                                for path in out.rglob("*") if path.is_file())


@pytest.mark.parametrize("name,crafted,message", CASES, ids=[case[0] for case in CASES])
def test_crafted_folder_api(pristine, tmp_path, name, crafted, message):  # noqa: F811
    place = crafted_place(pristine, tmp_path, crafted)
    before = file_hashes(place, place / "out") if "FIFO" not in name else None
    with pytest.raises(VocabxferError, match=message):
        transfer_checkpoint(place / "model", place / "target.json", place / "out")
    assert not (place / "out").exists() and not output_leaks(place)
    if before is not None:
        assert file_hashes(place, place / "out") == before
    assert not [path for path in place.iterdir() if path.name.startswith(".out.")]


@pytest.mark.parametrize("name,crafted,message", CASES, ids=[case[0] for case in CASES])
def test_crafted_folder_cli(pristine, tmp_path, capsys, name, crafted, message):  # noqa: F811
    transfer_is_refused(crafted_place(pristine, tmp_path, crafted), capsys, message)


def test_an_honest_tie_is_accepted(pristine, tmp_path):  # noqa: F811
    """A config that says tied over a checkpoint that stores the head as an
    exact copy of the embeddings is telling the truth."""
    from vocabxfer.checkpoints.streamed import open_checkpoint

    place = crafted_place(pristine, tmp_path, tie_lie)
    checkpoint = open_checkpoint(place / "model")
    embed = checkpoint.entry("model.embed_tokens.weight")
    head_file = checkpoint.files[checkpoint.weight_map["lm_head.weight"]]
    head = head_file.entries["lm_head.weight"]
    embed_file = checkpoint.files[checkpoint.weight_map["model.embed_tokens.weight"]]
    with open(embed_file.path, "rb") as handle:
        handle.seek(embed_file.data_start + embed.start)
        rows = handle.read(embed.size)
    with open(head_file.path, "r+b") as handle:
        handle.seek(head_file.data_start + head.start)
        handle.write(rows)
    result = transfer_checkpoint(place / "model", place / "target.json", place / "out")
    assert "lm_head.weight" in result.tensors


def test_a_hub_cache_whose_blobs_lead_elsewhere_is_refused(pristine, tmp_path):  # noqa: F811
    repo = tmp_path / "cache" / "models--org--name"
    snapshot = repo / "snapshots" / "0123abc"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    snapshot.mkdir(parents=True)
    (repo / "blobs").symlink_to(elsewhere)
    for path in (pristine / "sharded").iterdir():
        blob = hashlib.sha256(path.name.encode()).hexdigest()
        shutil.copy(path, elsewhere / blob)
        (snapshot / path.name).symlink_to(Path("../..") / "blobs" / blob)
    with pytest.raises(VocabxferError, match="is a link to .*, outside the model folder"):
        transfer_checkpoint(snapshot, pristine / "target.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "folder link out"])
def test_a_target_tokenizer_that_never_ends_or_leads_out_is_refused(pristine, tmp_path,  # noqa
                                                                     capsys, special):
    if special == "fifo":
        tokenizer = tmp_path / "tokenizer-fifo"
        os.mkfifo(tokenizer)
    elif special == "/dev/zero":
        tokenizer = Path("/dev/zero")
    else:
        tokenizer = tmp_path / "tok"
        tokenizer.mkdir()
        (tokenizer / "tokenizer.json").symlink_to(pristine / "target.json")
    code = main(["transfer", "--model", str(pristine / "sharded"), "--tokenizer",
                 str(tokenizer), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and one_error_line(err), err
    assert re.search(r"is not a regular file|outside the tokenizer folder", err), err
    assert not (tmp_path / "out").exists()


def test_json_depth_is_measured_without_recursion():
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth(7) == 0
    deep = current = []
    for _ in range(10_000):
        current.append([])
        current = current[0]
    assert json_depth(deep) > MAX_JSON_DEPTH


def test_a_sane_config_passes_and_every_field_is_named():
    check_config_document({"vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2,
                           "num_hidden_layers": 0, "pad_token_id": 9,
                           "eos_token_id": [1, 2], "tie_word_embeddings": False}, "c")
    with pytest.raises(VocabxferError, match="hidden_size 9 is not a multiple of "
                                             "num_attention_heads 2"):
        check_config_document({"hidden_size": 9, "num_attention_heads": 2}, "c")
    with pytest.raises(VocabxferError, match="num_hidden_layers is -1"):
        check_config_document({"num_hidden_layers": -1}, "c")
