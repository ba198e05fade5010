"""Atomic checkpoints, pruning, and resume that skips corrupt files."""

import errno
import os

import pytest
import torch

from common.checkpoint import list_checkpoints, load_newest, save_checkpoint


def state(version: int) -> dict:
    return {
        "model": {"w": torch.full((3,), float(version))},
        "optimizer": {},
        "model_version": version,
        "frames": version * 10,
        "layout": "abc",
    }


def test_keeps_the_newest_k(tmp_path):
    for version in range(5):
        save_checkpoint(tmp_path, version, state(version), keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-000000000004.pt", "ckpt-000000000003.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_resume_skips_truncated_and_garbage_files(tmp_path):
    save_checkpoint(tmp_path, 1, state(1), keep=5)
    newest = save_checkpoint(tmp_path, 2, state(2), keep=5)
    newest.write_bytes(newest.read_bytes()[:100])  # a crash mid-copy
    (tmp_path / "ckpt-000000000003.pt").write_bytes(b"not a checkpoint")
    loaded, problems = load_newest(tmp_path)
    assert loaded is not None and loaded["model_version"] == 1
    assert len(problems) == 2


def test_interrupted_write_leaves_no_newest_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, state(1), keep=5)

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    try:
        save_checkpoint(tmp_path, 2, state(2), keep=5)
    except OSError:
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000001.pt"]
    assert load_newest(tmp_path)[0]["model_version"] == 1


def test_a_write_failing_on_a_full_disk_raises_oserror_and_prunes_nothing(tmp_path, monkeypatch):
    """The write fails after the temp file has bytes in it (where a full disk fails): the
    error keeps its errno, the temp file goes, and the older checkpoints all stay even though
    `keep` would prune them after a successful write."""
    for version in (1, 2):
        save_checkpoint(tmp_path, version, state(version), keep=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as failed:
        save_checkpoint(tmp_path, 3, state(3), keep=1)
    assert failed.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    monkeypatch.undo()
    save_checkpoint(tmp_path, 3, state(3), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt-000000000003.pt",
        "ckpt-000000000002.pt",
    ]


def test_code_in_a_checkpoint_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    path = tmp_path / "ckpt-000000000009.pt"
    torch.save({"model": Evil()}, path)
    loaded, problems = load_newest(tmp_path)
    assert loaded is None and problems


def test_missing_directory_means_fresh_start(tmp_path):
    assert load_newest(tmp_path / "nothing") == (None, [])
