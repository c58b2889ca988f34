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
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from vocabxfer.errors import OutputError

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
    ancestor = nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{ancestor} is a file, so {path} cannot be created under it; "
                              "choose another output path")
    return path.parent.resolve() / path.name


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest of its ancestors that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


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


def check_apart(out_dir: Path, inputs: Dict[str, Optional[PathLike]]) -> None:
    """The output folder may not be, hold, or (for a folder input) lie
    inside anything the run reads or writes beside it: `inputs` maps what
    each is ("the input model folder", "the corpus file ...", "the loss
    plot") to its path. Replacing the output would otherwise delete it,
    with overwrite as without. Links are followed to what they name."""
    for what, given in inputs.items():
        if given is None:
            continue
        place = Path(os.path.abspath(os.path.expanduser(os.fspath(given))))
        for candidate in dict.fromkeys([place, place.resolve()]):
            if candidate == out_dir or candidate.is_relative_to(out_dir):
                held = "is" if candidate == out_dir else "holds"
                raise OutputError(f"the output folder {out_dir} {held} {what} ({given}); "
                                  "replacing it would delete it. Choose an output folder "
                                  "apart from every input")
            if candidate.is_dir() and out_dir.is_relative_to(candidate):
                raise OutputError(f"{out_dir} is inside {what} {candidate}; choose an output "
                                  "folder outside it")


def input_path(value: object) -> Optional[Path]:
    """The path of an input given as a path (a tokenizer, a corpus file), or
    None for anything else (an object in memory, a hub id)."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(os.path.expanduser(os.fspath(value)))
        if path.exists() or path.is_symlink():
            return path
    return None


def check_writable_place(path: Path, what: str) -> None:
    """A file can be created at `path`: its nearest existing folder takes a
    new file (tried, not guessed from permission bits, which root ignores)."""
    folder = nearest_existing(path.parent)
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".vocabxfer-probe-", dir=folder)
    except OSError as error:
        raise OutputError(f"{what} {path} cannot be written: {folder} does not take new files "
                          f"({error.strerror or error}); choose a writable place") from None
    os.close(descriptor)
    os.unlink(probe)


# ---- the hidden companions of a destination, and how they are recognised ----------
#
# A staging folder is named .<name>.partial-<pid>-<token> beside its
# destination and holds MARKER, a file that repeats its pid and token; the
# token is 128 random bits drawn for this write. A retired (old) folder is
# named .<name>.old-<pid>-<token> (the journal's swap) or sits at the staging
# name (an exchange), and is recognised by the published folder still holding
# the marker of the same token. Nothing is ever recognised by its name alone:
# a path is deleted or moved only when its marker (or its empty state)
# proves that a vocabxfer write made it, and a journal names no paths at all,
# only a pid and token from which the paths are computed.

MARKER = ".vocabxfer-staging"
JOURNAL_FORMAT = 2
TOKEN = re.compile(r"[0-9a-f]{32}")
COMPANION = re.compile(r"(partial|old)-([0-9]{1,10})-([0-9a-f]{32})")
MAX_JOURNAL_BYTES = 4096


def _companion(destination: Path, kind: str, token: str, pid: Optional[int] = None) -> Path:
    return destination.with_name(f".{destination.name}.{kind}-"
                                 f"{os.getpid() if pid is None else pid}-{token}")


def _journal(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.swap-journal")


def _companions_of(destination: Path) -> List[Tuple[Path, str, int, str]]:
    """(path, kind, pid, token) of every entry beside `destination` whose name
    is exactly that of one of its companions: the name is compared as a
    literal, never used as a pattern."""
    prefix = f".{destination.name}."
    found = []
    try:
        entries = list(os.scandir(destination.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = COMPANION.fullmatch(entry.name[len(prefix):])
        if match:
            found.append((Path(entry.path), match[1], int(match[2]), match[3]))
    return found


def _marker_text(token: str) -> str:
    return f"vocabxfer staging {os.getpid()} {token}\n"


def _read_marker(folder: Path) -> Optional[Tuple[int, str]]:
    """(pid, token) of the marker in `folder`, or None where `folder` is not
    a real folder holding a regular marker file of the expected form."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return None
        data = _read_regular(folder / MARKER, 200)
    except OSError:
        return None
    if data is None:
        return None
    words = data.decode("ascii", "replace").split()
    if len(words) != 4 or words[:2] != ["vocabxfer", "staging"] or not words[2].isdigit() \
            or not TOKEN.fullmatch(words[3]):
        return None
    return int(words[2]), words[3]


def _read_regular(path: Path, limit: int) -> Optional[bytes]:
    """The bytes of `path` if it is a regular file (not a link, FIFO or
    device: opened without following links or blocking, then checked) of at
    most `limit` bytes; None otherwise. Raises OSError if it cannot be
    opened."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) |
                         getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return os.read(descriptor, limit + 1)
    finally:
        os.close(descriptor)


def _marked(folder: Path, token: str) -> bool:
    marker = _read_marker(folder)
    return marker is not None and marker[1] == token


def _unmark(folder: Path, token: Optional[str] = None) -> None:
    """Remove the marker a published folder still holds (of `token`, or of
    any write whose process is gone)."""
    marker = _read_marker(folder)
    if marker is None or (token is not None and marker[1] != token):
        return
    if token is None and _pid_alive(marker[0]):
        return
    try:
        (folder / MARKER).unlink()
    except FileNotFoundError:
        pass
    _fsync_path(folder, directory=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return True  # never ours to judge: os.kill(0) and (-1) mean groups
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove(path: Path) -> None:
    """Delete a path this process has proved its own. A link is unlinked,
    never followed; rmtree itself does not follow links inside."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove_if_empty(path: Path) -> None:
    """A staging folder killed before its marker was written is empty:
    removing an empty folder can lose nothing."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            os.rmdir(path)
    except OSError:
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


def _write_json(path: Path, document: dict, scratch: Path) -> None:
    """Write `document` to `path` in one step, through `scratch`, a file in a
    folder of this write's own."""
    with open(scratch, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)
    _fsync_path(path.parent, directory=True)


def _remove_retired(retired: Path, destination: Path) -> None:
    """Remove the old folder a swap moved aside; if it cannot be removed,
    say where it stays rather than hide it."""
    _remove(retired)
    if retired.exists() or retired.is_symlink():
        logger.warning("replaced %s, but its old contents could not be deleted: they remain in "
                       "%s; delete that folder by hand", destination, retired)


def _swap_with_journal(staging: Path, destination: Path, token: str) -> None:
    """Two renames, recorded first so that recover() can finish them. The
    journal holds the pid and token only: recover() computes the paths."""
    retired = _companion(destination, "old", token)
    _write_json(_journal(destination),
                {"format": JOURNAL_FORMAT, "pid": os.getpid(), "token": token},
                scratch=staging / ".vocabxfer-journal")
    os.rename(destination, retired)
    os.rename(staging, destination)
    _fsync_path(destination.parent, directory=True)
    _journal(destination).unlink()
    _remove_retired(retired, destination)


def publish(staging: Path, destination: Path, token: str, overwrite: bool = True) -> None:
    """Move a complete, flushed, marked `staging` folder (of this write's
    `token`) to `destination` in one step. Without `overwrite` only a
    missing or empty destination is taken, decided by the rename itself: a
    folder another run published in the meantime is never replaced
    (OutputError). The published folder keeps its marker until the caller
    removes it (the retired folder is recognised by it until then)."""
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
        # `staging` now holds the old folder; `destination` holds the marker
        # of `token`, which proves the old one ours to remove after a kill.
        _fsync_path(destination.parent, directory=True)
        _remove_retired(staging, destination)
    else:
        _swap_with_journal(staging, destination, token)
    _fsync_path(destination.parent, directory=True)


def _read_journal(journal: Path) -> Tuple[int, str]:
    """(pid, token) of a journal this module wrote; anything else is refused
    and left where it is."""
    def refuse(why: str) -> OutputError:
        return OutputError(f"{journal} is not a journal that vocabxfer wrote ({why}); it was "
                           "left alone, and nothing beside it was moved or deleted. Delete "
                           "it by hand if you know where it came from, or choose another "
                           "output folder")

    try:
        data = _read_regular(journal, MAX_JOURNAL_BYTES)
    except OSError as error:  # a link (O_NOFOLLOW) or an unreadable file
        raise refuse(f"it is not a regular file that can be read: {error.strerror}") from None
    if data is None:
        raise refuse(f"it is not a regular file of at most {MAX_JOURNAL_BYTES} bytes")
    try:
        record = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise refuse(f"{type(error).__name__}") from None
    if not (isinstance(record, dict) and set(record) == {"format", "pid", "token"}
            and record["format"] == JOURNAL_FORMAT and type(record["pid"]) is int
            and 0 < record["pid"] < 2 ** 31 and isinstance(record["token"], str)
            and TOKEN.fullmatch(record["token"])):
        raise refuse("its content is not a pid and token of this version's form")
    return record["pid"], record["token"]


def _finish_journal(destination: Path) -> None:
    """Complete (or undo) a swap a journal records, touching only the paths
    computed from its pid and token, each once its marker proves it made by
    that write."""
    journal = _journal(destination)
    if not (journal.exists() or journal.is_symlink()):
        return
    writer, token = _read_journal(journal)
    if writer != os.getpid() and _pid_alive(writer):
        return  # another process is in the middle of this swap
    staging = _companion(destination, "partial", token, writer)
    retired = _companion(destination, "old", token, writer)
    if destination.exists() or destination.is_symlink():
        if _marked(destination, token):
            _remove(retired)  # the second rename was done: this is the old folder
            _unmark(destination, token)
        elif _marked(staging, token):
            _remove(staging)  # killed before the first rename: the old folder stands
    elif _marked(staging, token):
        # Killed between the two renames: the new folder is complete (it was
        # flushed before the journal was written).
        os.rename(staging, destination)
        _fsync_path(destination.parent, directory=True)
        _remove(retired)
        _unmark(destination, token)
    else:
        raise OutputError(f"{journal} records a swap whose new folder is not where it should "
                          f"be (nothing marked at {staging}); it was left alone, and nothing "
                          "was moved or deleted. Delete it by hand if you know where it came "
                          "from")
    journal.unlink()
    _fsync_path(destination.parent, directory=True)


def recover(destination: PathLike) -> None:
    """Finish or undo an interrupted write to `destination`: complete a swap
    its journal records, and remove what writes of processes that no longer
    run left beside it. Only what a marker proves to be vocabxfer's is moved
    or deleted: a journal that is not one this module wrote is refused
    (OutputError) and left alone, and files that merely look like leftovers
    are never touched. Every write calls this first."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        return
    _finish_journal(destination)
    published = _read_marker(destination)
    for path, kind, pid, token in _companions_of(destination):
        if _pid_alive(pid):
            continue
        if kind == "partial" and _marked(path, token):
            _remove(path)  # a staging folder of a write that never published
        elif published is not None and published[1] == token:
            _remove(path)  # the old folder a published write had not yet removed
        else:
            _remove_if_empty(path)  # killed before its marker was written
    _unmark(destination)


def _make_staging(destination: Path) -> Tuple[Path, str]:
    """A new, marked staging folder beside `destination`, and its token.
    os.mkdir applies the process umask itself: the published folder gets the
    permissions any folder made here would get, with no umask juggling."""
    while True:
        token = secrets.token_hex(16)
        staging = _companion(destination, "partial", token)
        try:
            os.mkdir(staging, 0o777)
        except FileExistsError:
            continue
        descriptor = os.open(staging / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(descriptor, _marker_text(token).encode("ascii"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return staging, token


def _check_still_marked(staging: Path, token: str) -> None:
    if not _marked(staging, token):
        raise OutputError(f"the writer removed or replaced {MARKER} in the staging folder "
                          f"{staging}; that name is vocabxfer's own and cannot be an output file")


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
    staging, token = _make_staging(destination)
    try:
        write(staging)
        _check_still_marked(staging, token)
        fsync_tree(staging)
        publish(staging, destination, token, overwrite)
    except BaseException:
        _remove(staging)  # made by this process in this run: ours, marker or not
        raise
    _unmark(destination, token)
    return destination


def write_file(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write(file)` on a staging file (inside a marked staging folder
    beside `path`), flush it, and rename it over `path` in one step."""
    path = output_path(path)
    recover(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging, token = _make_staging(path)
    try:
        file = staging / path.name
        write(file)
        _fsync_path(file, directory=False)
        os.replace(file, path)
        _fsync_path(path.parent, directory=True)
    finally:
        _remove(staging)
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
    staging, token = _make_staging(destination)
    try:
        write(staging)
        fsync_tree(staging)
        try:
            os.rename(staging, destination)
        except OSError:
            if not destination.is_dir():
                raise
    finally:
        _remove(staging)  # made by this process; gone already once published
    _unmark(destination, token)
    return destination
