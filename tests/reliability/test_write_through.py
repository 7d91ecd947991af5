"""Output paths are written, not replaced: a new path or a regular file is replaced atomically (keeping
its mode), a device, a pipe or a link is written through; a run's own checkpoints are never averaged over."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from seqtool.training.checkpoint import load_checkpoint
from seqtool.util.files import atomic_open
from tests.reliability.test_bad_input import check_error, invoke

pytestmark = pytest.mark.reliability

SOURCE = b"1 2\n3 4 5\n"


def run_dir(root: Path) -> Path:
    return root / "runs" / "tiny"


def write_command(kind: str, root: Path, output: Path) -> tuple[list[str], bytes | None]:
    """The argv (and stdin) of a command writing `output`: translate -o or average -o."""
    if kind == "translate":
        return ["translate", "-c", str(run_dir(root)), "-o", str(output)], SOURCE
    return ["average", "-c", str(run_dir(root)), "--last", "1", "-o", str(output)], None


def check_written(kind: str, path: Path) -> None:
    if kind == "translate":
        assert len(path.read_text().splitlines()) == 2
    else:
        assert load_checkpoint(path)["averaged"]


@pytest.fixture
def device_node(tmp_path) -> Path:
    """A character device like /dev/null (1, 3), made inside tmp_path; skipped where mknod is not allowed."""
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as err:
        pytest.skip(f"cannot make a device node here ({err})")
    return path


@pytest.mark.parametrize("kind", ["translate", "average"])
def test_a_device_stays_a_device(kind, trained, device_node, capsys, monkeypatch):
    args, stdin = write_command(kind, trained, device_node)
    code, _, err = invoke(args, capsys, monkeypatch, stdin=stdin)
    assert code == 0, err
    assert stat.S_ISCHR(device_node.lstat().st_mode)
    assert not [p for p in device_node.parent.iterdir() if p.name.startswith(".null")]


@pytest.mark.parametrize("kind", ["translate", "average"])
def test_a_fifo_is_written_to_its_reader(kind, trained, tmp_path, capsys, monkeypatch):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    args, stdin = write_command(kind, trained, fifo)
    code, _, err = invoke(args, capsys, monkeypatch, stdin=stdin)
    assert code == 0, err
    reader.join(timeout=60)
    assert not reader.is_alive(), "the reader never saw a writer: the FIFO was replaced"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    copy = tmp_path / "received"
    copy.write_bytes(received[0])
    check_written(kind, copy)


@pytest.mark.parametrize("kind", ["translate", "average"])
def test_a_symlink_keeps_its_link_and_its_target_gets_the_output(kind, trained, tmp_path, capsys, monkeypatch):
    target = tmp_path / "elsewhere" / "out"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "out.link"
    link.symlink_to(target)
    args, stdin = write_command(kind, trained, link)
    code, _, err = invoke(args, capsys, monkeypatch, stdin=stdin)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    check_written(kind, target)


def test_a_link_to_an_open_file_appends_like_the_shell(trained, tmp_path, capsys, monkeypatch):
    """`-o /dev/stdout >> log` in small: a link in tmp_path to /proc/self/fd/N, N this process's
    append-mode descriptor of a log with content; the output goes after it, the link stays."""
    log = tmp_path / "log"
    log.write_text("earlier\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{fd}")
    try:
        args, stdin = write_command("translate", trained, link)
        code, _, err = invoke(args, capsys, monkeypatch, stdin=stdin)
    finally:
        os.close(fd)
    assert code == 0, err
    assert link.is_symlink()
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier" and len(lines) == 3


def test_a_directory_as_output_is_one_line(trained, tmp_path, capsys, monkeypatch):
    args, stdin = write_command("translate", trained, tmp_path)
    code, _, err = invoke(args, capsys, monkeypatch, stdin=stdin)
    check_error(code, err, str(tmp_path), "is a directory")


@pytest.mark.parametrize("kind", ["translate", "average"])
def test_new_files_follow_the_umask_and_old_files_keep_their_mode(kind, trained, tmp_path, capsys, monkeypatch):
    old_umask = os.umask(0o027)
    try:
        new, kept = tmp_path / "new", tmp_path / "kept"
        kept.write_text("old\n")
        kept.chmod(0o604)
        for path in (new, kept):
            args, stdin = write_command(kind, trained, path)
            code, _, err = invoke(args, capsys, monkeypatch, stdin=stdin)
            assert code == 0, err
            check_written(kind, path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604


def test_atomic_open_leaves_a_failed_regular_file_untouched(tmp_path):
    path = tmp_path / "f"
    path.write_text("whole\n")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "whole\n" and os.listdir(tmp_path) == ["f"]


@pytest.mark.parametrize("name", ["latest.pt", "best.pt", "step_00000010.pt"])
def test_average_never_overwrites_the_runs_own_checkpoints(name, trained, capsys, monkeypatch):
    target = run_dir(trained) / "checkpoints" / name
    before = target.read_bytes()
    args, _ = write_command("average", trained, target)
    code, _, err = invoke(args, capsys, monkeypatch)
    check_error(code, err, name, "checkpoint of the run")
    assert target.read_bytes() == before


def test_a_resume_writes_through_linked_run_files(corpus, capsys, monkeypatch):
    """Another path: a resume rewrites metrics.jsonl (cut to the checkpoint) and recipe.yaml; a user's
    links to them (say, into a dashboard folder) stay links and their targets get the new content."""
    code, _, err = invoke(["train", "r.yaml", "--set", "train.max_steps=4"], capsys, monkeypatch)
    assert code == 0, err
    run, shared = Path("runs/tiny").resolve(), corpus.parent / "dashboard"
    shared.mkdir()
    for name in ("metrics.jsonl", "recipe.yaml"):
        os.replace(run / name, shared / name)
        (run / name).symlink_to(shared / name)
    code, _, err = invoke(["train", "r.yaml", "--resume", "--set", "train.max_steps=8"], capsys, monkeypatch)
    assert code == 0, err
    assert (run / "metrics.jsonl").is_symlink() and (run / "recipe.yaml").is_symlink()
    assert '"step": 8' in (shared / "metrics.jsonl").read_text()
    assert "max_steps: 8" in (shared / "recipe.yaml").read_text()
