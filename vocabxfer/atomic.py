"""Writes a folder or a file so that it appears whole or not at all, and
survives a crash or a power loss at any point.

A folder is written under a hidden staging name beside its destination,
flushed to disk (files, then folders), and moved into place in one step:
a rename when the destination is new; when it replaces an old folder, an
exchange of the two (Linux renameat2 RENAME_EXCHANGE), or, where that is not
available, two renames recorded in a journal that the next write to the same
place completes before doing anything else. Staging and retired folders left
by a killed process are removed by the next write.

Only the standard library is used, so that crash tests can run this module
in a child process without importing torch.
"""

import ctypes
import errno
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import OutputError

PathLike = Union[str, os.PathLike]
logger = logging.getLogger(__name__)

AT_FDCWD = -100
RENAME_EXCHANGE = 2


def output_path(path: PathLike) -> Path:
    """The absolute path of an output folder or file. Its parent folders are
    resolved; the last component is not followed: a symbolic link there
    (even a dangling one) is refused, since replacing it would write
    somewhere other than the named place."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        # os.path.abspath("") is the working folder: an unset $OUT in a
        # script must not replace it.
        raise OutputError(f"the output path is {text!r}, which names no folder; expected a "
                          "path such as out/my-model")
    path = Path(os.path.abspath(os.path.expanduser(text)))
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; pass the folder it points to, or "
                              "another path")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{ancestor} is a file, so {path} cannot be created under it; "
                              "choose another output path")
    return path.parent.resolve() / path.name


def check_output_folder(path: PathLike, overwrite: bool,
                        flag: str = "overwrite=True (--force)") -> Path:
    """Refuse an output path that is a link, lies under a file, is a file, or
    is a non-empty folder unless `overwrite`; `flag` names the switch that
    allows it. Returns the normalised path."""
    path = output_path(path)
    check_not_precious(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another output path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass {flag} to replace it, "
                              "or choose another folder")
    return path


def check_not_precious(path: Path) -> None:
    """Refuse, even with overwrite, an output folder whose replacement would
    destroy what the user works in: the filesystem root, the home folder,
    the working folder, or a folder holding either."""
    precious = {"the filesystem root": Path(path.anchor or "/"),
                "the working folder": Path.cwd().resolve(),
                "the home folder": Path.home().resolve()}
    for what, place in precious.items():
        if path == place or place.is_relative_to(path):
            held = "is" if path == place else "holds"
            raise OutputError(f"the output folder {path} {held} {what}; replacing it would "
                              "delete it. Choose a new folder, such as out/my-model")


def check_apart(model_folder: Optional[Path], out_dir: Path) -> None:
    """The output may not be the input folder, lie inside it, or hold it:
    replacing it would destroy what is being read."""
    if model_folder is None:
        return
    if out_dir == model_folder or out_dir.is_relative_to(model_folder):
        raise OutputError(f"{out_dir} is inside the input model folder {model_folder}; choose an "
                          "output folder outside it")
    if model_folder.is_relative_to(out_dir):
        raise OutputError(f"{out_dir} holds the input model folder {model_folder}; choose an "
                          "output folder that does not contain the input")


# ---- names of the hidden companions of a destination -------------------------

def _companion(destination: Path, kind: str) -> Path:
    return destination.with_name(f".{destination.name}.{kind}-{os.getpid()}-"
                                 f"{secrets.token_hex(4)}")


def _journal(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.swap-journal")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(companion: Path) -> bool:
    """Whether the process that named this companion still runs."""
    try:
        pid = int(companion.name.rsplit("-", 2)[1])
    except (IndexError, ValueError):
        return False
    return _pid_alive(pid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# ---- flushing ---------------------------------------------------------------------

def _fsync_path(path: Path, directory: bool) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return  # e.g. folders cannot be opened on some platforms
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """Flush every file under `root`, then every folder, bottom up, so that
    a rename published afterwards never exposes empty files."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(folder) / name, directory=False)
        _fsync_path(Path(folder), directory=True)


# ---- swapping -----------------------------------------------------------------------

def exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE). False
    where the system or the file system cannot; raises other errors."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second),
                       RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(error, os.strerror(error), str(second))


def _write_json(path: Path, document: dict, staging: Path) -> None:
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    _fsync_path(path.parent, directory=True)


def _remove_retired(retired: Path, destination: Path) -> None:
    """Remove the old folder a swap moved aside; if it cannot be removed,
    say where it stays rather than hide it."""
    _remove(retired)
    if retired.exists() or retired.is_symlink():
        logger.warning("replaced %s, but its old contents could not be deleted: they remain in "
                       "%s; delete that folder by hand", destination, retired)


def _swap_with_journal(staging: Path, destination: Path) -> None:
    """Two renames, recorded first so that recover() can finish them."""
    retired = _companion(destination, "old")
    journal = _journal(destination)
    _write_json(journal, {"destination": str(destination), "staging": str(staging),
                          "retired": str(retired), "pid": os.getpid()},
                staging=_companion(destination, "partial"))
    os.rename(destination, retired)
    os.rename(staging, destination)
    _fsync_path(destination.parent, directory=True)
    journal.unlink()
    _remove_retired(retired, destination)


def publish(staging: Path, destination: Path, overwrite: bool = True) -> None:
    """Move a complete, flushed `staging` folder to `destination` in one
    step. Without `overwrite` only a missing or empty destination is taken,
    decided by the rename itself: a folder another run published in the
    meantime is never replaced (OutputError)."""
    if not overwrite:
        try:
            os.rename(staging, destination)  # replaces nothing but an empty folder
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR,
                                   errno.EISDIR):
                raise
            raise OutputError(f"{destination} was written by another process while this one "
                              "ran; it was left as that process wrote it (choose another "
                              "folder, or replace it with the overwrite switch)") from None
    elif not destination.exists() and not destination.is_symlink():
        os.rename(staging, destination)
    elif exchange(staging, destination):
        # `staging` now holds the old folder.
        _fsync_path(destination.parent, directory=True)
        _remove_retired(staging, destination)
    else:
        _swap_with_journal(staging, destination)
    _fsync_path(destination.parent, directory=True)


def recover(destination: PathLike) -> None:
    """Finish or undo an interrupted write to `destination`: complete a swap
    its journal records, and remove the staging and retired folders of
    processes that no longer run. Every write calls this first."""
    destination = Path(destination)
    journal = _journal(destination)
    if journal.is_file():
        try:
            record = json.loads(journal.read_text(encoding="utf-8"))
            staging, retired = Path(record["staging"]), Path(record["retired"])
            writer = int(record.get("pid", 0))
        except (OSError, ValueError, KeyError, TypeError):
            record = None
        if record is not None and writer and writer != os.getpid() and _pid_alive(writer):
            return  # another process is in the middle of this swap
        if record is not None:
            if not destination.exists():
                # Killed between the two renames: the new folder is complete
                # (it was flushed before the journal was written).
                os.rename(staging if staging.is_dir() else retired, destination)
                _fsync_path(destination.parent, directory=True)
            _remove(staging)
            _remove(retired)
        _remove(journal)
    parent = destination.parent
    if not parent.is_dir():
        return
    for kind in ("partial", "old"):
        for companion in parent.glob(f".{destination.name}.{kind}-*"):
            if not _owner_alive(companion):
                _remove(companion)


def _make_staging(destination: Path) -> Path:
    # os.mkdir applies the process umask itself: the published folder gets
    # the permissions any folder made here would get, with no umask juggling.
    while True:
        staging = _companion(destination, "partial")
        try:
            os.mkdir(staging, 0o777)
            return staging
        except FileExistsError:
            continue


def write_folder(destination: PathLike, write: Callable[[Path], None], *, overwrite: bool,
                 flag: str = "overwrite=True (--force)") -> Path:
    """Run `write(folder)` into a staging folder beside `destination`, then
    publish it whole. An existing non-empty `destination` is replaced only
    with `overwrite`, and only once the new folder is complete; on any
    failure nothing is left behind and `destination` is untouched."""
    destination = output_path(destination)
    check_not_precious(destination)
    recover(destination)
    check_output_folder(destination, overwrite, flag)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = _make_staging(destination)
    try:
        write(staging)
        fsync_tree(staging)
        publish(staging, destination, overwrite)
    except BaseException:
        _remove(staging)
        raise
    return destination


def write_file(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write(file)` on a staging file beside `path`, flush it, and
    rename it over `path` in one step."""
    path = output_path(path)
    recover(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _companion(path, "partial")
    try:
        write(staging)
        _fsync_path(staging, directory=False)
        os.replace(staging, path)
        _fsync_path(path.parent, directory=True)
    except BaseException:
        _remove(staging)
        raise
    return path


def publish_once(destination: PathLike, write: Callable[[Path], None]) -> Path:
    """A folder written once and then only read (a cache): if it exists it
    is returned as it is; otherwise it is written and published whole. If
    another process publishes it first, theirs is kept."""
    destination = output_path(destination)
    check_not_precious(destination)
    if destination.is_dir():
        return destination
    recover(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = _make_staging(destination)
    try:
        write(staging)
        fsync_tree(staging)
        try:
            os.rename(staging, destination)
        except OSError:
            if not destination.is_dir():
                raise
    finally:
        _remove(staging)
    return destination

