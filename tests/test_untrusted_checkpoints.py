"""Checkpoints written by strangers: every crafted folder the adversarial run
found (and more) is refused through the API and the command line with one
line, nothing written at the output, and nothing changed anywhere else (a
decoy file beside the folders is hashed before and after). The header
reader is fuzzed against safetensors itself, and two runs racing to one new
output folder leave exactly one winner."""

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vocabxfer import ModelError, OutputError, transfer_checkpoint

from vocabxfer.checkpoints import atomic

from vocabxfer.checkpoints import safetensors_io
from vocabxfer.checkpoints.streamed import INDEX_FILE, SINGLE_FILE
from vocabxfer.cli.main import main

from .test_checkpoint import build_checkpoint

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


# ---- building crafted folders ------------------------------------------------------

def read_header(path: Path):
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def write_raw(path: Path, header, data: bytes) -> None:
    encoded = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def edit_header(path: Path, change) -> None:
    """Rewrite a safetensors file's header through `change(header)`, which
    may return a replacement; the data section stays as it was."""
    header, data = read_header(path)
    header = change(header) or header
    write_raw(path, header, data)


def set_entry(name, **fields):
    def change(header):
        header[name].update(fields)
    return change


def shard_of(folder: Path, name: str) -> Path:
    index = json.loads((folder / INDEX_FILE).read_text())
    return folder / index["weight_map"][name]


def whole_shard(folder: Path) -> Path:
    """A shard with no vocabulary-sized tensor: one that is copied whole."""
    index = json.loads((folder / INDEX_FILE).read_text())
    vocab_shards = {index["weight_map"][EMBED], index["weight_map"][HEAD]}
    return folder / sorted(set(index["weight_map"].values()) - vocab_shards)[0]


def edit_index(change):
    def crafted(folder: Path, decoy: Path) -> None:
        index = json.loads((folder / INDEX_FILE).read_text())
        index = change(index, folder, decoy) or index
        (folder / INDEX_FILE).write_text(json.dumps(index))
    return crafted


def point_at(shard_name):
    """An index whose embedding shard is `shard_name(decoy)`."""
    def change(index, folder, decoy):
        index["weight_map"][EMBED] = shard_name(folder, decoy)
    return change


def in_single(change):
    """The same change applied to a single-file checkpoint's header."""
    def crafted(folder: Path, decoy: Path) -> None:
        edit_header(folder / SINGLE_FILE, change)
    crafted.single = True
    return crafted


def symlink_out(folder: Path, decoy: Path) -> None:
    shard = shard_of(folder, EMBED)
    shard.unlink()
    shard.symlink_to(decoy)


def truncate_whole_shard(folder: Path, decoy: Path) -> None:
    shard = whole_shard(folder)
    shard.write_bytes(shard.read_bytes()[:-7])


def half_head_file(folder: Path, decoy: Path) -> None:
    """An untied lm_head that holds half its rows, the file still valid."""
    path = folder / SINGLE_FILE
    header, data = read_header(path)
    rows, width = header[HEAD]["shape"]
    start, end = header[HEAD]["data_offsets"]
    keep = (end - start) // 2 // width // 4 * width * 4
    cut = end - start - keep
    header[HEAD]["shape"] = [keep // width // 4, width]
    header[HEAD]["data_offsets"] = [start, start + keep]
    for spec in header.values():
        if isinstance(spec, dict) and "data_offsets" in spec and spec["data_offsets"][0] >= end:
            spec["data_offsets"] = [offset - cut for offset in spec["data_offsets"]]
    write_raw(path, header, data[:start + keep] + data[end:])


half_head_file.single = True


def duplicate_key(folder: Path, decoy: Path) -> None:
    path = folder / SINGLE_FILE
    header, data = read_header(path)
    text = json.dumps(header)
    spec = json.dumps(header[HEAD])
    text = text[:-1] + f', "{HEAD}": {spec}}}'
    encoded = text.encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


duplicate_key.single = True


def header_too_long(folder: Path, decoy: Path) -> None:
    path = folder / SINGLE_FILE
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(raw) * 2) + raw[8:])


header_too_long.single = True


def shift_offsets(name, by):
    def change(header):
        start, end = header[name]["data_offsets"]
        header[name]["data_offsets"] = [start + by, end + by]
    return change


def same_offsets_as_embed(header):
    header[HEAD]["data_offsets"] = list(header[EMBED]["data_offsets"])


# (name, crafted(folder, decoy), message): each must be refused with that
# message, through the API and the command line.
CASES = [
    ("index: absolute shard path", edit_index(point_at(lambda f, d: str(d))),
     "is not a plain file name inside the model folder"),
    ("index: ../ shard path", edit_index(point_at(lambda f, d: "../" + d.name)),
     "is not a plain file name inside the model folder"),
    ("index: shard in a subfolder", edit_index(point_at(lambda f, d: "sub/x.safetensors")),
     "is not a plain file name inside the model folder"),
    ("index: shard named ..", edit_index(point_at(lambda f, d: "..")),
     "is not a plain file name inside the model folder"),
    ("index: shard is a link out", symlink_out, "is a link to .*, outside the model folder"),
    ("index: shard value 7", edit_index(point_at(lambda f, d: 7)),
     "names the weight file 7, expected a file name"),
    ("index: metadata [1]", edit_index(lambda index, f, d: dict(index, metadata=[1])),
     "its metadata is a JSON list, expected an object"),
    ("index: a list", edit_index(lambda index, f, d: [index]),
     "is not a safetensors index"),
    ("index: no weight_map", edit_index(lambda index, f, d: {"metadata": {}}),
     "is not a safetensors index"),
    ("header: a list", in_single(lambda header: [header]),
     "the header is a JSON list, expected an object"),
    ("header: entry without data_offsets",
     in_single(lambda header: header[EMBED].pop("data_offsets") and None),
     f"tensor '{EMBED}' has no data_offsets"),
    ("header: an int entry", in_single(lambda header: dict(header, extra=7)),
     "tensor 'extra' is described by a int"),
    ("header: dtype F8_E4M3 on the embeddings", in_single(set_entry(EMBED, dtype="F8_E4M3")),
     f"tensor '{EMBED}' of shape .* and dtype F8_E4M3 needs"),
    ("header: unknown dtype", in_single(set_entry(EMBED, dtype="F7")),
     "has dtype 'F7', which safetensors does not know"),
    ("header: I32 embeddings", in_single(set_entry(EMBED, dtype="I32")),
     f"{EMBED} \\(input embeddings\\) is stored as I32; expected a floating-point dtype"),
    ("header: shape []", in_single(set_entry(EMBED, shape=[])),
     "needs 4 bytes but its data_offsets"),
    ("header: shape of strings", in_single(set_entry(EMBED, shape=["1000", 64])),
     "has shape \\['1000', 64\\], expected a list of non-negative ints"),
    ("header: metadata [1]", in_single(lambda header: dict(header, __metadata__=[1])),
     "__metadata__ must map strings to strings"),
    ("header: negative data_offsets",
     in_single(lambda header: header[EMBED].update(data_offsets=[
         -8, header[EMBED]["data_offsets"][1] - header[EMBED]["data_offsets"][0] - 8])),
     "expected \\[start, end\\] with 0 <= start <= end"),
    ("header: shape larger than its offsets",
     in_single(lambda header: header[EMBED].update(shape=[header[EMBED]["shape"][0] + 1,
                                                          header[EMBED]["shape"][1]])),
     "needs .* bytes but its data_offsets"),
    ("header: lm_head over embed_tokens", in_single(same_offsets_as_embed),
     "the tensors must follow one another with no gap or overlap"),
    ("header: offsets past the end", in_single(shift_offsets(HEAD, 10 ** 9)),
     "the tensors must follow one another with no gap or overlap"),
    ("header: start > end",
     in_single(lambda header: header[HEAD].update(
         data_offsets=header[HEAD]["data_offsets"][::-1])),
     "expected \\[start, end\\] with 0 <= start <= end"),
    ("header: a name twice", duplicate_key, f"the header names '{HEAD}' twice"),
    ("header: longer than the file", header_too_long, "its header length is"),
    ("untied lm_head with half its rows", half_head_file,
     f"{HEAD} \\(output embeddings\\) is stored with shape"),
    ("a whole-copied shard truncated", truncate_whole_shard,
     "truncated, or bytes left over"),
]


def one_error_line(err: str) -> bool:
    """The command's output ends in its one error line (progress bars,
    drawn with carriage returns, may precede it), with no traceback."""
    errors = [line for line in err.splitlines() if "vocabxfer: error: " in line]
    return (len(errors) == 1 and err.rstrip().endswith(errors[0].split("\r")[-1].strip())
            and "Traceback" not in err)


def file_hashes(root: Path, skip: Path):
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))
            if path.is_file() and not path.is_symlink() and skip not in path.parents}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A sharded (several shards, one without vocabulary tensors) and a
    single-file untied Llama checkpoint, built once."""
    root = tmp_path_factory.mktemp("pristine")
    target_tokenizer = build_checkpoint(root / "sharded", "llama", torch.float32,
                                        shard="12KB")
    build_checkpoint(root / "single", "llama", torch.float32, shard="100MB")
    target_tokenizer.save(str(root / "target.json"))
    index = json.loads((root / "sharded" / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) >= 3
    return root


def crafted_place(pristine: Path, tmp_path: Path, case) -> Path:
    import shutil

    kind = "single" if getattr(case, "single", False) else "sharded"
    shutil.copytree(pristine / kind, tmp_path / "model")
    shutil.copy(pristine / "target.json", tmp_path / "target.json")
    # The decoy: a real shard outside the model folder, which a crafted
    # index would have rewritten or truncated.
    source_shard = (tmp_path / "model" / SINGLE_FILE) if kind == "single" \
        else shard_of(tmp_path / "model", EMBED)
    shutil.copy(source_shard, tmp_path / "decoy.safetensors")
    case(tmp_path / "model", tmp_path / "decoy.safetensors")
    return tmp_path


@pytest.mark.parametrize("name,crafted,message", CASES, ids=[case[0] for case in CASES])
def test_crafted_checkpoint_api(pristine, tmp_path, name, crafted, message):
    place = crafted_place(pristine, tmp_path, crafted)
    before = file_hashes(place, place / "out")
    with pytest.raises(ModelError, match=message):
        transfer_checkpoint(place / "model", place / "target.json", place / "out")
    assert not (place / "out").exists()
    assert file_hashes(place, place / "out") == before
    assert not [path for path in place.iterdir() if path.name.startswith(".out.")]


@pytest.mark.parametrize("name,crafted,message", CASES, ids=[case[0] for case in CASES])
def test_crafted_checkpoint_cli(pristine, tmp_path, capsys, name, crafted, message):
    place = crafted_place(pristine, tmp_path, crafted)
    before = file_hashes(place, place / "out")
    transfer_is_refused(place, capsys, message)
    assert file_hashes(place, place / "out") == before


def transfer_is_refused(place: Path, capsys, message: str) -> None:
    """`vocabxfer transfer --force` of place/model to place/target.json exits
    2 with one line matching `message`, and writes no output folder."""
    import re

    code = main(["transfer", "--model", str(place / "model"), "--tokenizer",
                 str(place / "target.json"), "--out", str(place / "out"), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and one_error_line(err), err
    assert re.search(message, err.rstrip().splitlines()[-1]), err
    assert not (place / "out").exists()


def test_hub_cache_links_are_followed(pristine, tmp_path):
    """A Hugging Face cache snapshot links its files into ../../blobs: that
    one way out of the folder is allowed."""
    import shutil

    repo = tmp_path / "models--org--name"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in (pristine / "sharded").iterdir():
        blob = repo / "blobs" / hashlib.sha256(path.name.encode()).hexdigest()
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(Path("../..") / "blobs" / blob.name)
    result = transfer_checkpoint(snapshot, pristine / "target.json", tmp_path / "out")
    assert result.rewritten and (tmp_path / "out" / INDEX_FILE).is_file()


# ---- the header reader against safetensors itself ------------------------------------

def valid_file_bytes() -> bytes:
    from safetensors.torch import save

    generator = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 4, generator=generator),
               "b": torch.randn(5, generator=generator).to(torch.bfloat16),
               "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
               "d": torch.zeros(0, 4, dtype=torch.float16),
               "e": torch.tensor([True, False, True])}
    return save(tensors, metadata={"format": "pt"})


VALID = valid_file_bytes()
(HEADER_LENGTH,) = struct.unpack("<Q", VALID[:8])
VALID_HEADER = json.loads(VALID[8:8 + HEADER_LENGTH])
DATA = VALID[8 + HEADER_LENGTH:]

json_values = st.one_of(st.integers(-2 ** 65, 2 ** 65), st.sampled_from(
    ["F32", "BF16", "I64", "F8_E4M3", "U16", "X", ""]), st.none(), st.booleans(),
    st.lists(st.integers(-3, 200), max_size=3))


@st.composite
def mutated_files(draw):
    """A valid file mutated at the JSON level (a field of an entry set to
    another value, removed, or an offset nudged) or at the byte level."""
    if draw(st.booleans()):
        header = json.loads(json.dumps(VALID_HEADER))
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(sorted(header)))
            if name == "__metadata__":
                header[name] = draw(st.one_of(json_values, st.just({"k": "v"})))
                continue
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            how = draw(st.sampled_from(["set", "drop", "nudge"]))
            if how == "drop":
                header[name].pop(field, None)
            elif how == "nudge" and field == "data_offsets" and isinstance(
                    header[name].get(field), list) and len(header[name][field]) == 2:
                position = draw(st.integers(0, 1))
                header[name][field][position] += draw(st.integers(-9, 9))
            else:
                header[name][field] = draw(json_values)
        encoded = json.dumps(header).encode()
        data = DATA[:len(DATA) - draw(st.integers(0, 3))] + b"\0" * draw(st.integers(0, 2))
        return struct.pack("<Q", len(encoded)) + encoded + data
    raw = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, 8 + HEADER_LENGTH - 1))
        raw[position] = draw(st.integers(0, 255))
    return bytes(raw)


def safetensors_reads(path: Path):
    """Every tensor of the file as safetensors itself reads it, or None if
    it refuses the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as reference:
            return {name: reference.get_tensor(name) for name in reference.keys()}
    except Exception:  # safetensors raises its own error types, and OSError
        return None


@pytest.mark.slow
@given(mutated_files())
@settings(max_examples=400)
def test_header_reader_agrees_with_safetensors(tmp_path_factory, raw):
    """Both ways: what safetensors reads, the reader accepts and reads the
    same; what the reader accepts, safetensors reads. A reader that refused
    everything would fail here."""
    path = tmp_path_factory.getbasetemp() / "fuzzed.safetensors"
    path.write_bytes(raw)
    expected = safetensors_reads(path)
    try:
        file = safetensors_io.SafetensorsFile(path)
    except ModelError as error:
        assert expected is None, f"safetensors reads this file, but the reader refused: {error}"
        return
    assert expected is not None, "the reader accepted a file safetensors refuses"
    assert sorted(expected) == sorted(file.entries)
    for name in file.entries:
        if file.entries[name].dtype in safetensors_io.DTYPES:
            got = file.read(name)
            assert got.dtype == expected[name].dtype and got.shape == expected[name].shape
            assert torch.equal(got.view(-1).view(torch.uint8),
                               expected[name].reshape(-1).view(torch.uint8)), name


@st.composite
def valid_files(draw):
    """A file safetensors itself writes: one to four tensors of the dtypes
    the reader knows, shapes of 0 to 3 dimensions (empty ones too), and
    metadata of strings."""
    from safetensors.torch import save

    tensors = {}
    for index in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(sorted(set(safetensors_io.DTYPES.values()), key=str)))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        values = torch.randn(shape, generator=torch.Generator().manual_seed(index)) * 100
        tensors[draw(st.text("abcdefgh._", min_size=1, max_size=8)) + str(index)] = \
            values.to(dtype)
    metadata = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
    return save(tensors, metadata=metadata or None)


@pytest.mark.slow
@given(valid_files())
@settings(max_examples=200)
def test_header_reader_accepts_every_file_safetensors_writes(tmp_path_factory, raw):
    path = tmp_path_factory.getbasetemp() / "valid-fuzzed.safetensors"
    path.write_bytes(raw)
    expected = safetensors_reads(path)
    assert expected is not None
    file = safetensors_io.SafetensorsFile(path)
    assert sorted(file.entries) == sorted(expected)
    for name, tensor in expected.items():
        got = file.read(name)
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(got.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))


def test_header_reader_reads_the_valid_file(tmp_path):
    path = tmp_path / "valid.safetensors"
    path.write_bytes(VALID)
    file = safetensors_io.SafetensorsFile(path)
    assert sorted(file.entries) == ["a", "b", "c", "d", "e"]
    assert file.metadata == {"format": "pt"}
    assert torch.equal(file.read("c"), torch.arange(6).reshape(2, 3))


# ---- two runs to one new output folder ------------------------------------------------

def test_a_folder_published_meanwhile_is_never_replaced(tmp_path):
    """The second writer publishes while the first still writes: the first
    must lose with one clear error, and the folder stays the second's."""
    destination = tmp_path / "out"

    def second(folder):
        (folder / "who").write_text("second")

    def first(folder):
        (folder / "who").write_text("first")
        atomic.write_folder(destination, second, overwrite=False)

    with pytest.raises(OutputError, match="was written by another process while this one ran"):
        atomic.write_folder(destination, first, overwrite=False)
    assert (destination / "who").read_text() == "second"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_two_processes_to_one_new_folder(pristine, tmp_path):
    command = [sys.executable, "-m", "vocabxfer", "transfer", "--model",
               str(pristine / "sharded"), "--tokenizer", str(pristine / "target.json"),
               "--out", str(tmp_path / "out")]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            for _ in range(2)]
    results = [(run.wait(timeout=300), run.stdout.read(), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert one_error_line(loser), loser
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    for shard in set(index["weight_map"].values()):
        safetensors_io.SafetensorsFile(tmp_path / "out" / shard)  # whole and valid
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_an_old_folder_that_cannot_be_deleted_is_reported(tmp_path, monkeypatch, caplog):
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "old").write_text("old model")
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda *args, **kwargs: None)
    with caplog.at_level("WARNING", logger="vocabxfer.checkpoints.atomic"):
        atomic.write_folder(destination, lambda folder: (folder / "new").write_text("new"),
                            overwrite=True)
    assert (destination / "new").read_text() == "new"
    leftovers = [path for path in tmp_path.iterdir() if path.name != "out"]
    assert len(leftovers) == 1 and (leftovers[0] / "old").read_text() == "old model"
    assert f"its old contents could not be deleted: they remain in {leftovers[0]}" in caplog.text
