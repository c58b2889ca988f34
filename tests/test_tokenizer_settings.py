"""A tokenizer's settings (vocabularies/tokenizer_settings.py): the chat
template, length limit and padding and truncation sides of a tokenizer
folder are read with its vocabulary, checked as a stranger's, and kept by
every tokenizer vocabxfer writes or builds from it: the folder saved for a
moved model, an extension, a tokenizer trained like it."""

import json

import pytest
from transformers import AutoTokenizer

import vocabxfer
from vocabxfer import VocabError, load_vocab, save_tokenizer

from .conftest import BERT_SPECIALS, wordpiece_tokenizer

TEMPLATE = ("{% for message in messages %}[CLS]{{ message['role'] }}: "
            "{{ message['content'] }}[SEP]{% endfor %}")
TOKENS = BERT_SPECIALS + ["the", "cat", "sat", "on", "mat", "dog", "##s", "a", "and", "red"]
CHAT = [{"role": "user", "content": "the cat sat"}]


def tokenizer_folder(folder, config=None, template=TEMPLATE, extra=None, tokens=TOKENS):
    """A tokenizer folder as transformers 5 saves one: tokenizer.json,
    tokenizer_config.json and the chat template in chat_template.jinja."""
    folder.mkdir(parents=True)
    wordpiece_tokenizer(tokens).save(str(folder / "tokenizer.json"))
    settings = {"model_max_length": 128, "padding_side": "left", "unk_token": "[UNK]",
                "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, **(config or {})}))
    if template is not None:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    for name, text in (extra or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_a_folders_settings_are_read_with_its_vocabulary(tmp_path):
    vocab = load_vocab(tokenizer_folder(tmp_path / "tok"))
    assert vocab.settings == {"model_max_length": 128, "padding_side": "left",
                              "chat_template": TEMPLATE}


def test_a_saved_tokenizer_keeps_them_and_can_still_chat(tmp_path):
    out = save_tokenizer(tokenizer_folder(tmp_path / "tok"), tmp_path / "out")
    reloaded = AutoTokenizer.from_pretrained(str(out))
    assert reloaded.chat_template == TEMPLATE
    assert reloaded.model_max_length == 128 and reloaded.padding_side == "left"
    assert reloaded.apply_chat_template(CHAT, tokenize=False) == "[CLS]user: the cat sat[SEP]"


def test_named_templates_in_either_form_are_kept_by_name(tmp_path):
    listed = tokenizer_folder(tmp_path / "listed", template=None, config={"chat_template": [
        {"name": "default", "template": TEMPLATE}, {"name": "tool_use", "template": "{{ 1 }}"}]})
    files = tokenizer_folder(tmp_path / "files",
                             extra={"additional_chat_templates/tool_use.jinja": "{{ 1 }}"})
    for folder in (listed, files):
        assert load_vocab(folder).settings["chat_template"] == {"default": TEMPLATE,
                                                                "tool_use": "{{ 1 }}"}
        out = save_tokenizer(folder, tmp_path / f"{folder.name}-out")
        reloaded = AutoTokenizer.from_pretrained(str(out))
        assert reloaded.apply_chat_template(CHAT, tokenize=False) == \
            "[CLS]user: the cat sat[SEP]"
        assert reloaded.apply_chat_template(CHAT, tokenize=False, chat_template="tool_use") == "1"


@pytest.mark.parametrize("config,message", [
    ({"padding_side": "middle"}, "padding_side must be one of left, right, got 'middle'"),
    ({"truncation_side": 1}, "truncation_side must be one of left, right"),
    ({"model_max_length": -5}, "model_max_length must be a positive int, got -5"),
    ({"model_max_length": "long"}, "model_max_length must be a positive int"),
    ({"chat_template": 7}, "chat_template must be a Jinja template"),
    ({"chat_template": [{"name": "default"}]}, "must hold objects with a string name and"),
])
def test_bad_settings_are_refused_with_what_was_expected(tmp_path, config, message):
    folder = tokenizer_folder(tmp_path / "tok", config=config, template=None)
    with pytest.raises(VocabError, match=message):
        load_vocab(folder)


def test_an_older_configs_float_length_is_read_as_the_int_it_is(tmp_path):
    folder = tokenizer_folder(tmp_path / "tok", config={"model_max_length": 1e30})
    assert load_vocab(folder).settings["model_max_length"] == int(1e30)


@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe not utf-8", "is not UTF-8 text"),
    (b"x" * (2 ** 20 + 1), "a chat template"),
])
def test_a_chat_template_file_is_read_as_a_strangers(tmp_path, content, message):
    folder = tokenizer_folder(tmp_path / "tok", template=None)
    (folder / "chat_template.jinja").write_bytes(content)
    with pytest.raises(VocabError, match=message):
        load_vocab(folder)


def test_a_template_link_that_leaves_the_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours", encoding="utf-8")
    folder = tokenizer_folder(tmp_path / "tok", template=None)
    (folder / "chat_template.jinja").symlink_to(outside)
    with pytest.raises(VocabError, match="outside"):
        load_vocab(folder)


def test_a_tokenizer_trained_like_a_folder_keeps_its_settings(tmp_path, corpus_file):
    trained = vocabxfer.train_tokenizer(corpus_file, 60, min_frequency=1,
                                        like=tokenizer_folder(tmp_path / "tok"),
                                        show_progress=False)
    assert trained.chat_template == TEMPLATE
    assert trained.model_max_length == 128 and trained.padding_side == "left"


def test_a_transformers_tokenizers_settings_are_read_from_it(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder(tmp_path / "tok")))
    assert load_vocab(tokenizer).settings["chat_template"] == TEMPLATE


def test_without_settings_a_tokenizer_is_written_as_before(tmp_path):
    wordpiece_tokenizer(TOKENS).save(str(tmp_path / "tokenizer.json"))
    assert load_vocab(tmp_path / "tokenizer.json").settings == {}
    out = save_tokenizer(tmp_path / "tokenizer.json", tmp_path / "out")
    assert AutoTokenizer.from_pretrained(str(out)).chat_template is None


def bert_source(folder, limit):
    from .conftest import save_bert_folder

    save_bert_folder(folder, TOKENS)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, "model_max_length": limit}), encoding="utf-8")
    return folder


@pytest.mark.parametrize("refine", [False, True], ids=["streamed", "in-memory"])
def test_a_moved_model_keeps_its_length_limit_when_the_target_declares_none(
        tmp_path, corpus_file, refine):
    # The model's positions do not change with its vocabulary: truncation
    # must still stop at them.
    source = bert_source(tmp_path / "source", 64)
    new_tokens = TOKENS + ["cats", "dogs", "running"]  # rows left for refinement to train
    wordpiece_tokenizer(new_tokens).save(str(tmp_path / "target.json"))
    declared = tokenizer_folder(tmp_path / "declared", config={"model_max_length": 32},
                                tokens=new_tokens)
    options = dict(refinement=vocabxfer.RefineSettings(steps=1, batch_size=4),
                   refine_corpus=[corpus_file]) if refine else {}
    for target, expected in ((tmp_path / "target.json", 64), (declared, 32)):
        out = tmp_path / f"out-{expected}"
        vocabxfer.transfer_to_folder(source, out, tokenizer=target, show_progress=False,
                                     **options)
        assert AutoTokenizer.from_pretrained(str(out)).model_max_length == expected
