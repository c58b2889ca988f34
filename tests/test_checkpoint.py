"""transfer_checkpoint: streamed from sharded safetensors across
architectures, equal tensor for tensor to the in-memory transfer_model, the
other tensors byte-identical (copied or hard-linked), the folder loads and
runs; and its bad inputs."""

import filecmp
import json
import os
from pathlib import Path

import pytest
import torch

from vocabxfer import ModelError, OutputError, transfer_checkpoint, transfer_model
from vocabxfer.checkpoints import safetensors_io
from vocabxfer.checkpoints.streamed import INDEX_FILE, SINGLE_FILE
from vocabxfer.models.loading import load_model, model_class
from vocabxfer.vocabularies.as_transformers import as_transformers_tokenizer
from vocabxfer.cli.jobs import transfer_to_folder

from .conftest import BERT_SPECIALS, byte_level_text, byte_level_tokenizer, wordpiece_tokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "run", "play", "red", "blue"]
WORDPIECE_SOURCE = BERT_SPECIALS + WORDS + ["##s", "##ing", "##ed", "##n"]
WORDPIECE_TARGET = BERT_SPECIALS + ["the", "cats", "running", "played", "dog", "zebra", "##s"]
BYTE_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<unk>"]
BYTE_SOURCE = BYTE_SPECIALS + [byte_level_text(" " + word) for word in WORDS] + \
    [byte_level_text(char) for char in "abcdefghijklmnopqrstuvwxyz"]
BYTE_TARGET = BYTE_SPECIALS + [byte_level_text(word) for word in (" the", " cats", " mat")] + \
    [byte_level_text(" 영화")]


def tiny(name, vocab_size):
    """(model, source tokens) of a tiny random model of the architecture."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=BYTE_SPECIALS.index("<pad>"),
                  bos_token_id=0, eos_token_id=1)
    if name == "llama":
        config = tf.LlamaConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2,
                                tie_word_embeddings=False, **common)
        return tf.LlamaForCausalLM(config)
    if name == "qwen2":
        config = tf.Qwen2Config(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2,
                                tie_word_embeddings=True, **common)
        return tf.Qwen2ForCausalLM(config)
    if name == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, **common))
    if name == "bert":
        config = tf.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=40, pad_token_id=0,
                               tie_word_embeddings=False)
        model = tf.BertForMaskedLM(config)
        with torch.no_grad():
            model.cls.predictions.bias.normal_()
        return model
    if name == "t5":
        config = tf.T5Config(vocab_size=vocab_size, d_model=32, d_ff=40, num_layers=2,
                             num_heads=2, d_kv=16, pad_token_id=0, eos_token_id=3,
                             decoder_start_token_id=0)
        return tf.T5ForConditionalGeneration(config)
    config = tf.BartConfig(vocab_size=vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=40, decoder_ffn_dim=40, pad_token_id=0, bos_token_id=2,
                           eos_token_id=3, decoder_start_token_id=3, forced_eos_token_id=3)
    model = tf.BartForConditionalGeneration(config)
    with torch.no_grad():
        model.final_logits_bias.normal_()
    return model


ARCHITECTURES = {
    # name: (tokenizer family's source tokens, target tokens)
    "llama": "bytelevel", "qwen2": "bytelevel", "gpt2": "bytelevel",
    "bert": "wordpiece", "t5": "wordpiece", "bart": "wordpiece",
}


def tokenizers_for(family):
    if family == "wordpiece":
        return wordpiece_tokenizer(WORDPIECE_SOURCE), wordpiece_tokenizer(WORDPIECE_TARGET)
    merges = [("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t")]
    source = byte_level_tokenizer(BYTE_SOURCE + ["Ġ", "Ġc", "Ġca"], merges)  # " cat" is in
    return source, byte_level_tokenizer(BYTE_TARGET)


def build_checkpoint(folder: Path, name: str, dtype: torch.dtype, shard: str = "30KB"):
    source_tokenizer, target_tokenizer = tokenizers_for(ARCHITECTURES[name])
    torch.manual_seed(0)
    model = tiny(name, source_tokenizer.get_vocab_size() + 3).to(dtype)  # 3 padding rows
    model.save_pretrained(str(folder), max_shard_size=shard)
    as_transformers_tokenizer(source_tokenizer).save_pretrained(str(folder))
    return target_tokenizer


def run_forward(model, name):
    input_ids = torch.tensor([[0, 1, 2, 1]])
    with torch.no_grad():
        if name in ("t5", "bart"):
            return model(input_ids=input_ids, decoder_input_ids=input_ids).logits
        return model(input_ids=input_ids).logits


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_streamed_equals_in_memory(tmp_path, name, dtype):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, name, dtype)
    assert (source / INDEX_FILE).is_file(), "the fixture must be sharded"
    result = transfer_checkpoint(source, target_tokenizer, tmp_path / "streamed")

    loaded = load_model(source)
    transfer_model(loaded, source, target_tokenizer)
    expected = loaded.state_dict()
    streamed = load_model(tmp_path / "streamed")
    got = streamed.state_dict()
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype == dtype or not tensor.is_floating_point(), key
        assert torch.equal(got[key], tensor), key
    assert streamed.config.vocab_size == len(target_tokenizer.get_vocab())
    logits = run_forward(streamed, name)
    assert logits.shape[-1] == streamed.config.vocab_size and torch.isfinite(logits).all()
    assert result.rewritten


def test_matched_rows_are_bit_exact_in_bf16(tmp_path):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "llama", torch.bfloat16)
    result = transfer_checkpoint(source, target_tokenizer, tmp_path / "out")
    checkpoint_before = safetensors_io.SafetensorsFile
    index = json.loads((source / INDEX_FILE).read_text())
    file = checkpoint_before(source / index["weight_map"]["model.embed_tokens.weight"])
    before = file.read("model.embed_tokens.weight")
    out_index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    after = checkpoint_before(tmp_path / "out" / out_index["weight_map"][
        "model.embed_tokens.weight"]).read("model.embed_tokens.weight")
    assert after.dtype == torch.bfloat16
    pairs = zip(result.token_map.target_ids.tolist(), result.token_map.source_ids.tolist())
    for target_id, source_id in pairs:
        assert torch.equal(after[target_id].view(torch.int16), before[source_id].view(torch.int16))


@pytest.mark.parametrize("link", [False, True])
def test_other_tensors_are_byte_identical_and_shards_copied_or_linked(tmp_path, link):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "llama", torch.bfloat16, shard="5KB")
    result = transfer_checkpoint(source, target_tokenizer, tmp_path / "out", link=link)
    out = tmp_path / "out"
    whole = result.linked if link else result.copied
    assert whole and not (result.copied if link else result.linked)
    for shard in whole:
        assert filecmp.cmp(source / shard, out / shard, shallow=False)
        same_inode = os.stat(source / shard).st_ino == os.stat(out / shard).st_ino
        assert same_inode == link
    index = json.loads((source / INDEX_FILE).read_text())
    out_index = json.loads((out / INDEX_FILE).read_text())
    assert out_index["weight_map"] == index["weight_map"]
    sizes = 0
    for shard in set(out_index["weight_map"].values()):
        file = safetensors_io.SafetensorsFile(out / shard)
        sizes += sum(entry.size for entry in file.entries.values())
        before = safetensors_io.SafetensorsFile(source / shard)
        for name in file.entries:
            if name not in result.tensors:
                assert file.read(name).view(torch.uint8).equal(before.read(name).view(torch.uint8))
    assert out_index["metadata"]["total_size"] == sizes


def test_only_the_needed_rows_of_vocabulary_sized_tensors_are_read(tmp_path, monkeypatch):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "llama", torch.float32)
    read = {}
    read_rows = safetensors_io.SafetensorsFile.read_rows

    def recording(self, name, row_dim, row_ids):
        read[name] = row_ids.tolist()
        return read_rows(self, name, row_dim, row_ids)

    def no_whole_tensors(self, *args):
        raise AssertionError("a whole tensor was read")

    monkeypatch.setattr(safetensors_io.SafetensorsFile, "read_rows", recording)
    monkeypatch.setattr(safetensors_io.SafetensorsFile, "read", no_whole_tensors)
    result = transfer_checkpoint(source, target_tokenizer, tmp_path / "out")
    assert sorted(read) == ["lm_head.weight", "model.embed_tokens.weight"]
    used = set(result.token_map.source_ids.tolist())
    used |= set(result.plan.segments.source_ids.tolist())
    assert read["model.embed_tokens.weight"] == sorted(used)
    assert len(used) < len(result.token_map.source)


def test_single_file_checkpoint_and_generation_config(tmp_path):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "gpt2", torch.float32, shard="100MB")
    assert (source / SINGLE_FILE).is_file() and not (source / INDEX_FILE).exists()
    transfer_checkpoint(source, target_tokenizer, tmp_path / "out")
    out = tmp_path / "out"
    assert (out / SINGLE_FILE).is_file() and not (out / INDEX_FILE).exists()
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["bos_token_id"] == 0 and generation["eos_token_id"] == 1
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(BYTE_TARGET)


def test_the_workflow_streams_local_safetensors(tmp_path):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "bert", torch.float32)
    target_tokenizer.save(str(tmp_path / "target.json"))
    result = transfer_to_folder(source, tmp_path / "out", tokenizer=tmp_path / "target.json",
                                show_progress=False)
    assert result.weight_files is not None and "streamed the checkpoint" in str(result)
    assert model_class(load_model(tmp_path / "out").config).__name__ == "BertForMaskedLM"


# ---- bad input: one clear error, nothing written ---------------------------------

def test_bad_checkpoints(tmp_path):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "llama", torch.float32)
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((source / "config.json").read_text())
    with pytest.raises(ModelError, match="empty: has no weights"):
        transfer_checkpoint(empty, target_tokenizer, out)
    with pytest.raises(OutputError, match="is inside the input model folder"):
        transfer_checkpoint(source, target_tokenizer, source / "out")
    index = json.loads((source / INDEX_FILE).read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (source / shard).rename(tmp_path / shard)
    with pytest.raises(ModelError, match=f"names the weight file {shard}, which is missing"):
        transfer_checkpoint(source, target_tokenizer, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["source", "empty", shard])


def test_tokenizer_larger_than_the_embeddings(tmp_path):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "llama", torch.float32)
    rows = len(BYTE_SOURCE) + 3 + 3  # the merges' pieces, then 3 padding rows
    too_big = {f"token{i}": i for i in range(rows + 5)}
    with pytest.raises(ModelError, match=f"has {rows + 5} tokens but the model's input embeddings "
                                         f"have {rows} rows"):
        transfer_checkpoint(source, target_tokenizer, tmp_path / "out", source_tokenizer=too_big)
    assert not (tmp_path / "out").exists()


class Unsafe:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_weights_load_only_when_safe(tmp_path):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "bert", torch.float32, shard="100MB")
    state = load_model(source).state_dict()
    (source / SINGLE_FILE).unlink()
    torch.save(state, source / "pytorch_model.bin")
    with pytest.raises(ModelError, match="has only pickle weights"):
        transfer_checkpoint(source, target_tokenizer, tmp_path / "out")
    # The workflow loads them whole, with torch.load(weights_only=True).
    target_tokenizer.save(str(tmp_path / "target.json"))
    result = transfer_to_folder(source, tmp_path / "out", tokenizer=tmp_path / "target.json",
                                show_progress=False)
    assert result.weight_files is None and (tmp_path / "out" / SINGLE_FILE).is_file()
    # A pickle that would run code is refused.
    torch.save({"bert.embeddings.word_embeddings.weight": Unsafe()}, source / "pytorch_model.bin")
    with pytest.raises(ModelError, match="could not load the model"):
        transfer_to_folder(source, tmp_path / "out2", tokenizer=tmp_path / "target.json",
                           show_progress=False)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("init", ["mean", "normal", "random"])
def test_streamed_equals_in_memory_for_every_init(tmp_path, init):
    source = tmp_path / "source"
    target_tokenizer = build_checkpoint(source, "bert", torch.float32)
    transfer_checkpoint(source, target_tokenizer, tmp_path / "streamed", init=init, seed=5)
    loaded = load_model(source)
    transfer_model(loaded, source, target_tokenizer, init=init, seed=5)
    got = load_model(tmp_path / "streamed").state_dict()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(got[key], tensor), key
