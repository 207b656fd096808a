import os
import stat

import pytest

from priorlab.files import atomic_path, write_text_atomic


def test_atomic_write_has_normal_permissions(tmp_path):
    target = write_text_atomic(tmp_path / "sub" / "report.md", "hello")
    assert target.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["report.md"]  # no temporary left behind


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
