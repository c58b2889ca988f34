"""Files a model folder carries beside the transformers model that do not
depend on its vocabulary: a sentence-transformers model's modules.json and
the modules it names (pooling, normalisation, dense layers) with their
configs. Without them the moved model loads in sentence-transformers as a
bare transformer, its pooling guessed and its length limit and
normalisation lost. They are read from the source folder as a stranger's
(JSON bounded and well-formed, safetensors headers checked, no path that
leaves the folder) and copied into the output as they are. Pickle files are
never carried: a module that needs one is left out, and the log says so."""

import logging
import shutil
from pathlib import Path, PurePosixPath
from typing import Dict, Mapping

from vocabxfer.checkpoints.safetensors_io import SafetensorsFile
from vocabxfer.checkpoints.untrusted import read_json
from vocabxfer.errors import ModelError

logger = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
ROOT_FILES = (MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json")
# sentence-transformers modules whose files hang on the vocabulary: copied
# as they are, they would no longer fit the moved model.
VOCABULARY_MODULES = ("Transformer", "WordEmbeddings", "WordWeights", "BoW", "StaticEmbedding")


def read_companions(folder: Path) -> Dict[str, Path]:
    """The companion files of the model folder `folder` (already checked by
    untrusted.check_model_folder): their names in the output folder, and
    the files to copy. Empty for a folder without modules.json.

    Raises ModelError for a modules.json that is not sentence-transformers'
    list of modules, a module path that leaves the folder, or a companion
    file that is not what its name says."""
    if not (folder / MODULES_FILE).is_file():
        return {}
    modules = read_json(folder / MODULES_FILE, "config", ModelError,
                        "a sentence-transformers modules.json")
    if not isinstance(modules, list) or not all(
            isinstance(module, dict) and isinstance(module.get("path"), str)
            for module in modules):
        raise ModelError(f"{folder / MODULES_FILE}: expected a list of modules, each with a "
                         "path, as sentence-transformers writes it")
    companions = {name: folder / name for name in ROOT_FILES if (folder / name).is_file()}
    for module in modules:
        if module["path"] == "":  # the transformer itself: the model vocabxfer writes
            continue
        kind = str(module.get("type", "")).rpartition(".")[2]
        if kind in VOCABULARY_MODULES:
            raise ModelError(f"{folder / MODULES_FILE}: the module {module['path']!r} is a "
                             f"{kind}, whose files depend on the vocabulary, so it cannot be "
                             "carried over as it is; expected the transformer in the folder "
                             "itself (path \"\") and vocabulary-free modules beside it "
                             "(pooling, normalisation, dense layers)")
        module_folder = module_path(folder, module["path"])
        if not module_folder.is_dir():  # a module without files (Normalize)
            continue
        for file in sorted(path for path in module_folder.rglob("*") if path.is_file()):
            companions[file.relative_to(folder).as_posix()] = file
    for name, file in list(companions.items()):
        if file.suffix == ".json":
            read_json(file, "config", ModelError, f"a sentence-transformers {name}")
        elif file.suffix == ".safetensors":
            SafetensorsFile(file)
        else:
            logger.warning("%s is not carried into the moved model's folder: only JSON and "
                           "safetensors files are (convert a pickle checkpoint to safetensors "
                           "first)", file)
            del companions[name]
    return companions


def module_path(folder: Path, relative: str) -> Path:
    """A module's folder, which must be a plain relative path strictly
    inside the model folder."""
    parts = PurePosixPath(relative).parts
    path = folder.joinpath(*parts)
    if PurePosixPath(relative).is_absolute() or "\\" in relative or not parts or any(
            part in (".", "..") for part in parts) or not path.resolve().is_relative_to(
            folder.resolve()) or path.resolve() == folder.resolve():
        raise ModelError(f"{folder / MODULES_FILE}: the module path {relative!r} is not a "
                         "folder inside the model folder; expected a relative name such as "
                         "'1_Pooling'")
    return path


def copy_companions(companions: Mapping[str, Path], folder: Path) -> None:
    """Copy the companion files into the folder being written."""
    for name, source in companions.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
