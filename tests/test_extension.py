"""Extending a vocabulary (training/extension.py, cli/jobs.extend_to_folder):
for each family a tokenizer can be extended in (byte-level BPE, WordPiece,
Unigram), the source's ids are kept, every new token is produced on the
corpus, rank-dead candidates are found and left out, and text that needs
no new token is tokenized exactly as before; on the model side the old rows
stay bit-identical (input table, untied head and its bias), the spare rows
of a padded vocabulary are not carried over, and refinement trains the new
rows only."""

import json
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers

import vocabxfer
from vocabxfer import RefineSettings, VocabxferError, extend_tokenizer
from vocabxfer.cli.jobs import extend_to_folder
from vocabxfer.cli.main import main
from vocabxfer.training import extension as extension_module
from vocabxfer.training import continued_bpe
from vocabxfer.training.continued_bpe import ContinuedMerges

from .conftest import byte_level_tokenizer

ENGLISH = ["the", "cat", "sat", "on", "a", "mat", "dog", "and", "was", "red", "running",
           "jumping", "house", "garden", "window", "quickly", "slowly", "because", "under",
           "between", "morning", "evening", "river", "mountain", "little", "people"]
KOREAN = ["한국", "영화", "정말", "재미있어요", "배우", "연기가", "좋아요", "너무", "재미없어요",
          "최고", "추천", "감동", "스토리", "음악", "마지막", "장면", "다시", "보고", "싶어요"]


def lines(words, count, seed):
    chooser = random.Random(seed)
    return list(dict.fromkeys(" ".join(chooser.choice(words) for _ in range(chooser.randint(3, 9)))
                              for _ in range(count)))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extension")
    english, korean = folder / "english.txt", folder / "korean.txt"
    english.write_text("\n".join(lines(ENGLISH, 3000, 0)) + "\n", encoding="utf-8")
    korean.write_text("\n".join(lines(KOREAN, 3000, 1)) + "\n", encoding="utf-8")
    return english, korean


@pytest.fixture(scope="module")
def sources(corpora):
    """A source tokenizer of each family, trained on English only."""
    english, _ = corpora
    return {model: vocabxfer.train_tokenizer(english, size, model=model, show_progress=False)
            for model, size in (("bpe", 400), ("wordpiece", 300), ("unigram", 300))}


def encode(tokenizer, text):
    return tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("model", ["bpe", "wordpiece", "unigram"])
def test_an_extension_keeps_every_id_and_adds_the_domains_tokens(sources, corpora, model):
    source = sources[model]
    _, korean = corpora
    result = extend_tokenizer(source, [korean], 60, show_progress=False)
    extended, size = result.tokenizer, len(source)
    assert result.source_size == size and 0 < len(result.added) <= 60
    assert len(extended) == size + len(result.added)
    old, new = source.get_vocab(), extended.get_vocab()
    assert all(new[token] == index for token, index in old.items())
    assert [token for token, index in sorted(new.items(), key=lambda item: item[1])
            if index >= size] == result.added
    assert extended.all_special_tokens == source.all_special_tokens
    # Every new token is produced on the corpus: emitted, or (BPE) a step of
    # a longer new token that is emitted.
    passages = korean.read_text(encoding="utf-8").splitlines()
    emitted = {index for passage in passages for index in encode(extended, passage)
               if index >= size}
    produced = {extended.convert_ids_to_tokens(index) for index in emitted}
    if model == "bpe":
        merges = json.loads(extended.backend_tokenizer.to_str())["model"]["merges"]
        parts = {left + right: (left, right) for left, right in merges[-len(result.added):]}
        pending = list(produced)
        while pending:
            for part in parts.get(pending.pop(), ()):
                if part in parts and part not in produced:
                    produced.add(part)
                    pending.append(part)
    assert produced == set(result.added)
    assert result.emitted == len(emitted) and "every new token is produced" in str(result)


@pytest.mark.parametrize("model", ["bpe", "wordpiece", "unigram"])
def test_text_that_needs_no_new_token_is_tokenized_as_before(sources, corpora, model):
    source = sources[model]
    _, korean = corpora
    extended = extend_tokenizer(source, [korean], 60, show_progress=False).tokenizer
    size = len(source)
    texts = lines(ENGLISH, 300, 7) + lines(ENGLISH + KOREAN, 300, 8)
    uses_new = 0
    for text in texts:
        ids = encode(extended, text)
        if all(index < size for index in ids):
            assert ids == encode(source, text), text
        else:
            uses_new += 1
    assert uses_new > 100  # the property was tested where it could fail
    english_only = lines(ENGLISH, 300, 9)
    assert all(encode(extended, text) == encode(source, text) for text in english_only)


def rank_dead_setup(tmp_path):
    """A source that merges a+b first and ab+c next never lets b meet c."""
    from transformers import PreTrainedTokenizerFast

    tokens = ["<s>", "a", "b", "c", "Ġ", "ab", "abc"]
    source = PreTrainedTokenizerFast(tokenizer_object=byte_level_tokenizer(
        tokens, merges=[("a", "b"), ("ab", "c")]), bos_token="<s>")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc ca\nabc abc ca\n" * 10, encoding="utf-8")
    return source, corpus


def test_rank_dead_candidates_are_found_left_out_and_replaced(tmp_path, monkeypatch):
    """The check behind the learner: an appended merge b+c is rank-dead
    (b never meets c) and is left out; c+a, which nothing shadows, lives."""
    source, corpus = rank_dead_setup(tmp_path)
    monkeypatch.setattr(extension_module, "learn_merges", lambda *args, **kwargs:
                        ContinuedMerges(merges=[("b", "c"), ("c", "a"), ("Ġ", "ca")]))
    result = extend_tokenizer(source, [corpus], 2, show_progress=False)
    assert result.rank_dead == ["bc"]
    assert result.added == ["ca", "Ġca"]  # the dead one's place went to the next candidate
    assert result.steps_only == 1 and result.emitted == 1  # ca only inside Ġca
    assert "1 candidates were never produced and were left out (rank-dead" in str(result)


def test_merges_learned_on_the_source_segmentation_are_never_rank_dead(tmp_path):
    """The same source and corpus, learned for real: b+c is never learned,
    since b and c never meet in the source's segmentation."""
    source, corpus = rank_dead_setup(tmp_path)
    result = extend_tokenizer(source, [corpus], 2, show_progress=False)
    assert result.added == ["ca", "Ġca"] and result.rank_dead == []


def words_of(encoder, passages):
    """Each word of the passages as the source's tokens."""
    words = []
    for passage in passages:
        encoding = encoder.encode(passage, add_special_tokens=False)
        by_word = {}
        for token, index in zip(encoding.tokens, encoding.word_ids):
            by_word.setdefault(index, []).append(token)
        words += list(by_word.values())
    return words


def naive_continued_bpe(encoder, passages, count, existing, keep):
    """The oracle: every pair recounted from scratch after each merge."""
    words = words_of(encoder, passages)
    kept_pairs = {pair for word in words_of(encoder, keep) for pair in zip(word, word[1:])}
    taken, merges = set(existing), []
    while len(merges) < count:
        counts = {}
        for word in words:
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        allowed = [(-number, pair) for pair, number in counts.items()
                   if number >= 2 and pair not in kept_pairs and pair[0] + pair[1] not in taken]
        if not allowed:
            break
        _, pair = min(allowed)
        merges.append(pair)
        taken.add(pair[0] + pair[1])
        words = [merge_left_to_right(word, pair) for word in words]
    return merges


def merge_left_to_right(word, pair):
    out, position = [], 0
    while position < len(word):
        if tuple(word[position:position + 2]) == pair:
            out.append(pair[0] + pair[1])
            position += 2
        else:
            out.append(word[position])
            position += 1
    return out


@pytest.mark.parametrize("word, pair, expected", [
    (["a", "a", "a"], ("a", "a"), ["aa", "a"]),
    (["a", "a", "a", "a"], ("a", "a"), ["aa", "aa"]),
    (["a", "b", "a", "b"], ("a", "b"), ["ab", "ab"]),
    (["x", "a", "c", "a", "b"], ("a", "b"), ["x", "a", "c", "ab"]),
    (["b", "a"], ("a", "b"), ["b", "a"]),
    (["a"], ("a", "b"), ["a"]),
])
def test_a_merge_joins_each_occurrence_left_to_right(word, pair, expected):
    assert continued_bpe.merged(word, pair, pair[0] + pair[1]) == expected
    assert merge_left_to_right(word, pair) == expected


@pytest.mark.parametrize("keep", [False, True])
def test_continued_bpe_learns_what_recounting_every_pair_learns(sources, corpora, keep):
    source = sources["bpe"]
    english, korean = corpora
    passages = korean.read_text(encoding="utf-8").splitlines()[:400]
    kept_text = english.read_text(encoding="utf-8").splitlines()[:200] + \
        lines(KOREAN[:3], 20, 3) if keep else []
    encoder = source.backend_tokenizer
    learned = continued_bpe.learn_merges(encoder, passages, 80, existing=set(source.vocab),
                                         keep=kept_text)
    assert learned.merges == naive_continued_bpe(encoder, passages, 80, source.vocab,
                                                 kept_text)
    assert len(learned.merges) == 80
    if keep:  # the text to keep is read exactly as before
        assert learned.kept_text
        extended = extend_tokenizer(source, [korean], 80, keep=kept_text,
                                    show_progress=False).tokenizer
        assert all(encode(extended, text) == encode(source, text) for text in kept_text)


@pytest.mark.parametrize("add", [0, -3, True, 2.5, 10 ** 9])
def test_a_bad_add_is_refused(sources, corpora, add):
    with pytest.raises(VocabxferError, match="add must be an int from 1 to"):
        extend_tokenizer(sources["bpe"], [corpora[1]], add)


def test_a_tokenizer_that_cannot_grow_is_refused(corpora):
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]")
    with pytest.raises(VocabxferError, match="a WordLevel tokenizer cannot be extended"):
        extend_tokenizer(wrapped, [corpora[1]], 10)


def test_a_corpus_with_nothing_new_adds_nothing_and_says_so(corpora):
    english, _ = corpora
    rich = vocabxfer.train_tokenizer(english, 2000, model="wordpiece", show_progress=False)
    with pytest.raises(VocabxferError, match="nothing to add"):
        extend_tokenizer(rich, [english], 50, show_progress=False)


# ---- the model side -------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_folder(sources, tmp_path_factory):
    """An untied Llama whose embeddings carry 3 spare rows beyond its
    byte-level BPE tokenizer (a padded vocabulary)."""
    from .test_objectives import causal_lm

    folder = tmp_path_factory.mktemp("llama") / "source"
    source = sources["bpe"]
    model = causal_lm(len(source) + 3, tied=False, seed=4)
    model.save_pretrained(str(folder))
    source.save_pretrained(str(folder))
    return folder


def stored(folder):
    return load_file(str(folder / "model.safetensors"))


def test_extending_a_model_keeps_its_rows_and_starts_the_new_ones_from_fvt(llama_folder,
                                                                            corpora, tmp_path):
    _, korean = corpora
    result = extend_to_folder(llama_folder, tmp_path / "out", [korean], 40, show_progress=False)
    size, added = result.extension.source_size, len(result.extension.added)
    before, after = stored(llama_folder), stored(tmp_path / "out")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert before[name].shape[0] == size + 3
        assert after[name].shape[0] == size + added  # the 3 spare rows are not carried over
        assert torch.equal(after[name][:size], before[name][:size]), name
    # The new rows are the plan's FVT rows, as an in-memory transfer makes them.
    model = vocabxfer.load_model(llama_folder)
    vocabxfer.transfer_model(model, llama_folder, result.extension.tokenizer)
    assert torch.equal(after["model.embed_tokens.weight"],
                       model.get_input_embeddings().weight.detach())
    assert torch.equal(after["lm_head.weight"], model.get_output_embeddings().weight.detach())
    reloaded = vocabxfer.load_vocab(tmp_path / "out")
    assert len(reloaded) == size + added


def test_a_sharded_checkpoint_is_extended_streamed_with_the_rows_made_in_memory(
        llama_folder, sources, corpora, tmp_path):
    from transformers import AutoModelForCausalLM

    _, korean = corpora
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(str(llama_folder)).save_pretrained(
        str(sharded), max_shard_size="20KB")
    sources["bpe"].save_pretrained(str(sharded))
    assert (sharded / "model.safetensors.index.json").is_file(), "the fixture must be sharded"
    result = extend_to_folder(sharded, tmp_path / "out", [korean], 40, show_progress=False)
    assert result.weight_files is not None  # streamed, not loaded whole
    model = vocabxfer.load_model(llama_folder)
    vocabxfer.transfer_model(model, llama_folder, result.extension.tokenizer)
    after = {}
    for file in (tmp_path / "out").glob("*.safetensors"):
        after.update(load_file(str(file)))
    assert torch.equal(after["model.embed_tokens.weight"],
                       model.get_input_embeddings().weight.detach())
    assert torch.equal(after["lm_head.weight"], model.get_output_embeddings().weight.detach())


def test_refining_an_extension_trains_the_new_rows_only_and_reports_what_was_kept(
        llama_folder, corpora, tmp_path):
    english, korean = corpora
    result = extend_to_folder(llama_folder, tmp_path / "out", [korean], 40,
                              refinement=RefineSettings(steps=4, batch_size=8),
                              other_domain=[english], show_progress=False)
    size = result.extension.source_size
    before, after = stored(llama_folder), stored(tmp_path / "out")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(after[name][:size], before[name][:size]), name
    # The new rows moved away from their FVT start (the same tokenizer, in memory).
    start = vocabxfer.load_model(llama_folder)
    vocabxfer.transfer_model(start, llama_folder, result.extension.tokenizer)
    fvt = start.get_input_embeddings().weight.detach()
    assert torch.equal(after["model.embed_tokens.weight"][:size], fvt[:size])
    assert not torch.equal(after["model.embed_tokens.weight"][size:], fvt[size:])
    report = json.loads((tmp_path / "out" / "vocabxfer_fidelity.json").read_text())
    assert report["measure"] == "bpb ratio" and report["other"]["identical"] == 1.0
    assert report["other"]["zero_shot"] > 0 and report["other"]["refined"] > 0
    assert "tokenized as before" in str(result)


def test_an_untied_head_and_its_bias_keep_their_rows(sources, corpora, tmp_path):
    from .conftest import tiny_bert

    _, korean = corpora
    source = sources["wordpiece"]
    folder = tmp_path / "bert"
    tiny_bert(len(source), tied=False, seed=2).save_pretrained(str(folder))
    source.save_pretrained(str(folder))
    result = extend_to_folder(folder, tmp_path / "out", [korean], 30,
                              refinement=RefineSettings(steps=3, batch_size=8),
                              fidelity=False, show_progress=False)
    size = result.extension.source_size
    before, after = stored(folder), stored(tmp_path / "out")
    names = [name for name in before if before[name].shape[:1] == (size,)]
    assert {"cls.predictions.bias", "cls.predictions.decoder.weight"} <= set(names)
    for name in names:
        assert after[name].shape[0] == size + len(result.extension.added)
        assert torch.equal(after[name][:size], before[name]), name


def test_the_command_line_extends_a_tokenizer_and_a_model(llama_folder, corpora, tmp_path,
                                                          capsys):
    _, korean = corpora
    assert main(["extend-tokenizer", "--tokenizer", str(llama_folder), "--corpus", str(korean),
                 "--add", "30", "--out", str(tmp_path / "tok")]) == 0
    assert "ids 0-" in capsys.readouterr().out
    assert main(["extend", "--model", str(llama_folder), "--corpus", str(korean), "--add", "30",
                 "--out", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert main(["extend", "--model", str(llama_folder), "--corpus", str(korean), "--add", "0",
                 "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "add must be an int from 1 to" in err and not (tmp_path / "none").exists()


def test_an_extended_instruct_model_can_still_be_chatted_with(llama_folder, corpora, tmp_path):
    from transformers import AutoTokenizer

    _, korean = corpora
    source = tmp_path / "instruct"
    shutil.copytree(llama_folder, source)
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    (source / "chat_template.jinja").write_text(template, encoding="utf-8")
    assert extend_tokenizer(source, [korean], 30, show_progress=False).tokenizer \
        .chat_template == template
    extend_to_folder(source, tmp_path / "out", [korean], 30, show_progress=False)
    before = AutoTokenizer.from_pretrained(str(source))
    after = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    chat = [{"role": "user", "content": "한국 영화 정말 재미있어요"}]
    text = before.apply_chat_template(chat, tokenize=False)
    assert after.chat_template == template
    assert after.apply_chat_template(chat, tokenize=False) == text
    assert len(after(text).input_ids) < len(before(text).input_ids)  # the new tokens read it


def test_a_source_that_reads_numbers_digit_by_digit_keeps_doing_so(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from vocabxfer.training.extension import reads_digits_one_by_one

    letters = list("abcdefghij")
    tokens = ["<s>", "Ġ"] + letters + list("0123456789") + ["Ġa", "ab"]
    source = PreTrainedTokenizerFast(tokenizer_object=byte_level_tokenizer(
        tokens, merges=[("Ġ", "a"), ("a", "b")]), bos_token="<s>")
    assert reads_digits_one_by_one(tokens, specials={"<s>"})
    assert not reads_digits_one_by_one(tokens + ["99"])
    assert reads_digits_one_by_one(tokens + ["<0x0A>"])  # byte pieces are no numbers
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc 99 abc 100 cab 99\n" * 50, encoding="utf-8")
    result = extend_tokenizer(source, [corpus], 20, show_progress=False)
    assert result.digit_tokens_refused > 0 and "reads numbers digit by digit" in str(result)
    assert not any(any(char.isdigit() for char in token) for token in result.added)
    text = "page 99 of 100 and 2014"
    assert encode(result.tokenizer, text) == encode(source, text)


def test_no_new_token_is_one_the_text_to_keep_would_use(sources, corpora):
    source = sources["bpe"]
    _, korean = corpora
    keep = lines(KOREAN[:4], 50, 11) + lines(ENGLISH, 50, 12)  # some Korean text is to stay
    plain = extend_tokenizer(source, [korean], 60, show_progress=False)
    kept = extend_tokenizer(source, [korean], 60, keep=keep, show_progress=False)
    assert kept.kept_text_tokens and "that the text to keep would use were left out" in str(kept)
    assert all(encode(kept.tokenizer, text) == encode(source, text) for text in keep)
    assert not all(encode(plain.tokenizer, text) == encode(source, text) for text in keep)


def test_an_extension_refines_the_new_rows_only_and_refuses_to_train_all(llama_folder, corpora,
                                                                          tmp_path):
    _, korean = corpora
    with pytest.raises(VocabxferError, match="extend keeps every old row bit for bit"):
        extend_to_folder(llama_folder, tmp_path / "out", [korean], 40,
                         refinement=RefineSettings(steps=2, trainable="all"),
                         show_progress=False)
    assert not (tmp_path / "out").exists()


def test_a_distributed_extension_is_refused_with_the_way_to_do_it(llama_folder, corpora,
                                                                   tmp_path, monkeypatch):
    from vocabxfer.refinement import distributed

    _, korean = corpora
    monkeypatch.setattr(distributed, "current", lambda: distributed.Ranks(0, 2))
    with pytest.raises(VocabxferError, match="extend it first \\(vocabxfer extend-tokenizer\\)"):
        extend_to_folder(llama_folder, tmp_path / "out", [korean], 40,
                         refinement=RefineSettings(steps=2), show_progress=False)
    assert not (tmp_path / "out").exists()
