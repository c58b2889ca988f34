"""What a transformers tokenizer carries beside its vocabulary and rules:
its chat template, its length limit, and the sides it pads and truncates
on. They are read once, with the vocabulary (from a tokenizer folder,
checked as a stranger's, or from a transformers tokenizer), and given to
every tokenizer vocabxfer builds from it: an extension of it, one trained
like it, and the tokenizer of a folder it writes. Without them an extended
instruct model could no longer be chatted with."""

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Mapping

from vocabxfer.checkpoints.untrusted import check_regular_file
from vocabxfer.errors import VocabError
from vocabxfer.vocabularies.vocab import Vocab

NAMES = ("chat_template", "model_max_length", "padding_side", "truncation_side")
SIDES = ("left", "right")
# A chat template is a short Jinja program; the largest in common use are
# tens of kilobytes.
MAX_TEMPLATE_BYTES = 2 ** 20
TEMPLATE_FILE, TEMPLATES_FOLDER = "chat_template.jinja", "additional_chat_templates"
# transformers' model_max_length for "no limit" (VERY_LARGE_INTEGER).
NO_LIMIT = int(1e30)


def read_folder_settings(folder: Path, config: Any) -> Dict[str, Any]:
    """The settings of a tokenizer folder: `config` is its
    tokenizer_config.json as read ({} when absent). The chat template comes
    from chat_template.jinja (and additional_chat_templates/*.jinja, by
    name), as transformers 5 saves it, else from the config."""
    settings = {name: config[name] for name in NAMES
                if isinstance(config, dict) and config.get(name) is not None}
    templates = {}
    if (folder / TEMPLATE_FILE).is_file():
        templates["default"] = read_template(folder / TEMPLATE_FILE)
    if (folder / TEMPLATES_FOLDER).is_dir():
        for path in sorted((folder / TEMPLATES_FOLDER).glob("*.jinja")):
            templates[path.stem] = read_template(path)
    if templates:
        settings["chat_template"] = templates["default"] if list(templates) == ["default"] \
            else templates
    return checked_settings(settings, f"{folder}: tokenizer_config.json")


def read_template(path: Path) -> str:
    check_regular_file(path, MAX_TEMPLATE_BYTES, VocabError, "a chat template")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise VocabError(f"{path}: is not UTF-8 text; expected a Jinja chat template") from None


def settings_of(tokenizer: Any) -> Dict[str, Any]:
    """The settings a transformers tokenizer holds (none for others), as
    transformers accepted them."""
    if not hasattr(tokenizer, "save_pretrained"):
        return {}
    settings = {name: getattr(tokenizer, name, None) for name in NAMES}
    return {name: value for name, value in settings.items() if value is not None}


def checked_settings(settings: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """`settings` with each value checked for what transformers accepts; a
    list of named chat templates (tokenizer_config.json's older form)
    becomes the dict transformers holds."""
    checked = dict(settings)
    length = checked.get("model_max_length")
    if isinstance(length, float) and length.is_integer():  # 1e+30 in an older config
        length = checked["model_max_length"] = int(length)
    if length is not None and (not isinstance(length, int) or isinstance(length, bool)
                               or length < 1):
        raise VocabError(f"{where}: model_max_length must be a positive int, got {length!r}")
    for name in ("padding_side", "truncation_side"):
        if name in checked and checked[name] not in SIDES:
            raise VocabError(f"{where}: {name} must be one of {', '.join(SIDES)}, got "
                             f"{checked[name]!r}")
    template = checked.get("chat_template")
    if isinstance(template, (list, tuple)):
        if not all(isinstance(entry, dict) and isinstance(entry.get("name"), str)
                   and isinstance(entry.get("template"), str) for entry in template):
            raise VocabError(f"{where}: a list of chat templates must hold objects with a "
                             "string name and template")
        template = checked["chat_template"] = {entry["name"]: entry["template"]
                                               for entry in template}
    if template is not None and not isinstance(template, str) and not (
            isinstance(template, dict) and all(isinstance(key, str) and isinstance(value, str)
                                               for key, value in template.items())):
        raise VocabError(f"{where}: chat_template must be a Jinja template (a string) or "
                         f"templates by name, got a {type(template).__name__}")
    return checked


def with_source_limit(target: Vocab, source: Vocab) -> Vocab:
    """The target as the moved model's tokenizer: where it declares no
    length limit it takes the source's, since the model's positions did not
    change (a BERT still reads 512 tokens, and truncation must say so)."""
    limit = source.settings.get("model_max_length")
    own = target.settings.get("model_max_length")
    if limit is None or limit >= NO_LIMIT or (own is not None and own < NO_LIMIT):
        return target
    return replace(target, settings={**target.settings, "model_max_length": limit})
