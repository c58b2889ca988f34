"""Folders appear whole or not at all: the swap, its journal, the clean-up of
what killed processes leave, refused output paths, and processes killed
with SIGKILL at random points of a save."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vocabxfer.checkpoints import atomic
from vocabxfer.errors import OutputError

from .conftest import KILL_BETWEEN_RENAMES

PACKAGE = Path(atomic.__file__).parents[1]  # vocabxfer/
FILES = {"model.bin": 3_000_000, "config.json": 200, "tokenizer.json": 50_000}


def write_version(version: str):
    """A writer of a folder whose every file says which version it is."""
    def write(folder: Path) -> None:
        for name, size in FILES.items():
            (folder / name).write_bytes(version.encode() * size)
    return write


def version_of(folder: Path, marker_allowed: bool = False) -> str:
    """'A' or 'B' if the folder holds that version whole; fails otherwise.
    `marker_allowed`: a write killed between publishing and removing its
    marker leaves it there until the next run's recovery."""
    assert folder.is_dir(), f"{folder} is missing"
    names = sorted(p.name for p in folder.iterdir()
                   if not (marker_allowed and p.name == atomic.MARKER))
    assert names == sorted(FILES), list(folder.iterdir())
    versions = set()
    for name, size in FILES.items():
        data = (folder / name).read_bytes()
        assert len(data) == size, f"{name} has {len(data)} bytes, expected {size}"
        versions.add(data[:1].decode())
        assert data == data[:1] * size, f"{name} mixes versions"
    assert len(versions) == 1, versions
    return versions.pop()


def hidden_leftovers(parent: Path):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_write_replace_and_no_leftovers(tmp_path):
    out = tmp_path / "out"
    atomic.write_folder(out, write_version("A"), overwrite=False)
    assert version_of(out) == "A"
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        atomic.write_folder(out, write_version("B"), overwrite=False)
    atomic.write_folder(out, write_version("B"), overwrite=True)
    assert version_of(out) == "B"
    assert hidden_leftovers(tmp_path) == []


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "mark").write_text("1")
    (second / "mark").write_text("2")
    if not atomic.exchange(first, second):
        pytest.skip("this system or file system has no RENAME_EXCHANGE")
    assert (first / "mark").read_text() == "2" and (second / "mark").read_text() == "1"


def test_replace_without_exchange_uses_a_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "exchange", lambda first, second: False)
    out = tmp_path / "out"
    atomic.write_folder(out, write_version("A"), overwrite=False)
    atomic.write_folder(out, write_version("B"), overwrite=True)
    assert version_of(out) == "B" and hidden_leftovers(tmp_path) == []


def marked_staging(parent: Path, name: str, version: str, pid: int, token: str) -> Path:
    """What a write leaves beside `name`: a staging folder with its marker."""
    staging = parent / f".{name}.partial-{pid}-{token}"
    staging.mkdir()
    write_version(version)(staging)
    (staging / atomic.MARKER).write_text(f"vocabxfer staging {pid} {token}\n")
    return staging


def journal_of(parent: Path, name: str, pid: int, token: str) -> Path:
    journal = parent / f".{name}.swap-journal"
    journal.write_text(json.dumps({"format": 2, "pid": pid, "token": token}))
    return journal


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


TOKEN = "0123456789abcdef" * 2


def test_recover_finishes_a_swap_killed_between_its_renames(tmp_path):
    # What a kill between rename(out -> retired) and rename(staging -> out)
    # leaves: the journal, the retired old folder, the complete new one.
    out, pid = tmp_path / "out", dead_pid()
    marked_staging(tmp_path, "out", "B", pid, TOKEN)
    retired = tmp_path / f".out.old-{pid}-{TOKEN}"
    retired.mkdir()
    write_version("A")(retired)
    journal_of(tmp_path, "out", pid, TOKEN)
    atomic.recover(out)
    assert version_of(out) == "B" and hidden_leftovers(tmp_path) == []


def test_a_journal_is_refused_unless_its_new_folder_carries_its_marker(tmp_path):
    # The old folder moved aside and no marked new folder: nothing proves the
    # journal ours, so nothing is moved, not even back.
    out, pid = tmp_path / "out", dead_pid()
    retired = tmp_path / f".out.old-{pid}-{TOKEN}"
    retired.mkdir()
    write_version("A")(retired)
    journal_of(tmp_path, "out", pid, TOKEN)
    unmarked = tmp_path / f".out.partial-{pid}-{TOKEN}"
    unmarked.mkdir()
    (unmarked / "data").write_text("someone else's")
    with pytest.raises(OutputError, match="records a swap whose new folder is not where"):
        atomic.recover(out)
    assert version_of(retired) == "A" and (unmarked / "data").read_text() == "someone else's"
    assert not out.exists() and (tmp_path / ".out.swap-journal").exists()


@pytest.mark.parametrize("content", [
    {"destination": "{out}", "staging": "{victim}", "retired": "{victim}"},  # the old form
    {"format": 2, "pid": 1, "token": "../../victim"},
    {"format": 2, "pid": "7", "token": TOKEN},
    {"format": 2, "pid": 7, "token": TOKEN, "retired": "{victim}"},
    ["a", "list"],
], ids=["names-paths", "token-with-separators", "pid-a-string", "extra-key", "not-an-object"])
def test_a_planted_journal_is_refused_and_nothing_it_names_is_touched(tmp_path, content):
    parent, victim = tmp_path / "shared", tmp_path / "work"
    parent.mkdir()
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    out = parent / "out"
    text = json.dumps(content).replace("{out}", str(out)).replace("{victim}", str(victim))
    (parent / ".out.swap-journal").write_text(text)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is not a journal that vocabxfer wrote"):
            atomic.write_folder(out, write_version("B"), overwrite=overwrite)
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert not out.exists()
    assert hidden_leftovers(parent) == [".out.swap-journal"]


def test_a_journal_that_is_a_link_or_a_fifo_is_refused(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "elsewhere.json").write_text(json.dumps({"format": 2, "pid": 7,
                                                         "token": TOKEN}))
    (tmp_path / ".out.swap-journal").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(OutputError, match="not a regular file"):
        atomic.recover(out)
    (tmp_path / ".out.swap-journal").unlink()
    os.mkfifo(tmp_path / ".out.swap-journal")
    with pytest.raises(OutputError, match="not a regular file"):
        atomic.recover(out)


def test_only_leftovers_that_carry_their_marker_are_removed(tmp_path):
    pid = dead_pid()
    ours = marked_staging(tmp_path, "out", "A", pid, TOKEN)
    empty = tmp_path / f".out.partial-{pid}-{'e' * 32}"  # killed before its marker
    empty.mkdir()
    # Look-alikes a user (or a neighbour) keeps: the exact form without a
    # marker, a marker of another token, and names that only resemble it.
    lookalikes = {f".out.partial-{pid}-{'a' * 32}": "unmarked",
                  f".out.old-{pid}-{'b' * 32}": "old, unmarked",
                  ".out.old-backup": "backup", ".out.partial-keep-this": "keep",
                  f".out.partial-{pid}-cc": "short token"}
    for name, text in lookalikes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").write_text(text)
    foreign = marked_staging(tmp_path, "out", "A", pid, "c" * 32)
    (foreign / atomic.MARKER).write_text(f"vocabxfer staging {pid} {'d' * 32}\n")
    live = marked_staging(tmp_path, "out", "A", os.getppid(), "f" * 32)
    fifo = tmp_path / f".out.partial-{pid}-{'9' * 32}"  # a marker that would block a read
    fifo.mkdir()
    os.mkfifo(fifo / atomic.MARKER)
    atomic.write_folder(tmp_path / "out", write_version("B"), overwrite=False)
    assert (fifo / atomic.MARKER).exists()
    assert not ours.exists() and not empty.exists()
    for name, text in lookalikes.items():
        assert (tmp_path / name / "data").read_text() == text
    assert foreign.exists() and live.exists()
    assert version_of(tmp_path / "out") == "B"


def test_the_output_name_is_a_literal_never_a_pattern(tmp_path):
    pid = dead_pid()
    keep = {".bashrc.old-2023-01": "settings", ".cfg.partial-v2-final": "config",
            f".cfg.partial-{pid}-{'a' * 32}": "unmarked, another name"}
    for name, text in keep.items():
        (tmp_path / name).write_text(text)
    for pattern in ("*", "?", "[a-z]*", ".*"):
        atomic.write_folder(tmp_path / pattern, write_version("A"), overwrite=True)
        assert version_of(tmp_path / pattern) == "A"
    for name, text in keep.items():
        assert (tmp_path / name).read_text() == text


def test_an_old_folder_left_by_an_exchange_is_known_by_the_published_marker(tmp_path):
    # Killed after the exchange, before the old folder was removed: the new
    # folder still holds the marker whose token names the old one.
    out, pid = tmp_path / "out", dead_pid()
    out.mkdir()
    write_version("B")(out)
    (out / atomic.MARKER).write_text(f"vocabxfer staging {pid} {TOKEN}\n")
    old = tmp_path / f".out.partial-{pid}-{TOKEN}"
    old.mkdir()
    write_version("A")(old)
    atomic.recover(out)
    assert version_of(out) == "B" and hidden_leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    atomic.write_folder(out, write_version("A"), overwrite=False)

    def failing(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.write_folder(out, failing, overwrite=True)
    assert version_of(out) == "A" and hidden_leftovers(tmp_path) == []


def test_files_and_folders_are_flushed_before_the_rename(tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync

    def recording_fsync(descriptor):
        flushed.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = atomic.write_folder(tmp_path / "out", write_version("A"), overwrite=False)
    names = [Path(path).name for path in flushed]
    for name in FILES:
        assert name in names, names
    assert any(Path(path).name.startswith(".out.partial-") for path in flushed)  # the folder
    assert str(out.parent) in flushed  # the parent, after the rename


def test_symbolic_links_are_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    link = tmp_path / "out"
    link.symlink_to(elsewhere)
    with pytest.raises(OutputError, match="is a symbolic link"):
        atomic.write_folder(link, write_version("A"), overwrite=True)
    assert (elsewhere / "precious.txt").read_text() == "keep" and link.is_symlink()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="is a symbolic link"):
        atomic.write_folder(dangling, write_version("A"), overwrite=False)
    assert not (tmp_path / "nowhere").exists()


def test_an_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, so .* cannot be created under it"):
        atomic.check_output_folder(tmp_path / "file" / "sub" / "out", overwrite=False)


def test_permissions_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        out = atomic.write_folder(tmp_path / "out", write_version("A"), overwrite=False)
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o750


# ---- processes killed with SIGKILL in the middle of a save ----------------------

# The child loads vocabxfer.checkpoints.atomic without vocabxfer/__init__ (no torch), so
# that it starts in milliseconds, then saves versions A and B in turn.
CHILD = """
import sys, types
package = types.ModuleType("vocabxfer")
package.__path__ = [{package!r}]
sys.modules["vocabxfer"] = package
from vocabxfer.checkpoints import atomic
FILES = {files!r}

def write_version(version):
    def write(folder):
        for name, size in FILES.items():
            (folder / name).write_bytes(version.encode() * size)
    return write

if {journal!r}:
    atomic.exchange = lambda first, second: False
if {kill_between!r}:
    exec({kill_between_renames!r})
print("ready", flush=True)
version = "B"
while True:
    atomic.write_folder({out!r}, write_version(version), overwrite=True)
    version = "A" if version == "B" else "B"
"""


def run_child(out: Path, journal: bool, kill_between: bool = False) -> subprocess.Popen:
    code = CHILD.format(package=str(PACKAGE), files=FILES, out=str(out), journal=journal,
                        kill_between=kill_between, kill_between_renames=KILL_BETWEEN_RENAMES)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.slow
@pytest.mark.parametrize("journal", [False, True], ids=["exchange", "journal"])
def test_random_kills_leave_the_old_or_the_new_folder(tmp_path, journal):
    out = tmp_path / "out"
    atomic.write_folder(out, write_version("A"), overwrite=False)
    rng = random.Random(1234)
    for _ in range(8):
        child = run_child(out, journal)
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if not journal:
            # One-step swaps: whole old or whole new, even before recovery.
            assert version_of(out, marker_allowed=True) in ("A", "B")
        atomic.recover(out)  # what the next run does first
        assert version_of(out) in ("A", "B")
        assert hidden_leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_kill_between_the_two_renames_is_completed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    atomic.write_folder(out, write_version("A"), overwrite=False)
    child = run_child(out, journal=True, kill_between=True)
    assert child.wait() == -signal.SIGKILL
    assert not out.exists()  # the window the journal exists for
    atomic.write_folder(out, write_version("A"), overwrite=True)  # the next run
    assert version_of(out) == "A" and hidden_leftovers(tmp_path) == []
    # ... and recovery alone gives the new folder.
    child = run_child(out, journal=True, kill_between=True)
    child.wait()
    atomic.recover(out)
    assert version_of(out) == "B" and hidden_leftovers(tmp_path) == []
