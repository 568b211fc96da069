import hashlib

import pytest

from qsave.storage import atomic_path, file_sha256, write_text_atomic


def test_atomic_file_write_replaces_only_on_success(tmp_path):
    dest = tmp_path / "out" / "report.json"
    write_text_atomic(dest, "one")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert dest.read_text() == "one"
    assert [p.name for p in dest.parent.iterdir()] == ["report.json"], "no temporary left behind"


def test_atomic_directory_write_replaces_whole_directory(tmp_path):
    dest = tmp_path / "shard"
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard"]


def test_atomic_path_requires_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(tmp_path / "x"):
        pass
    assert not (tmp_path / "x").exists()


def test_file_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 9000
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
