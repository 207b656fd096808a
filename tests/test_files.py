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


def test_refuse_to_replace_stops_before_work_and_names_the_flag(tmp_path):
    from priorlab.files import refuse_to_replace

    kept = tmp_path / "results.json"
    kept.write_text("mine")
    refuse_to_replace(None, tmp_path / "new.json")  # nothing there: no error
    with pytest.raises(SystemExit, match=r"results.json exists; pass --overwrite to replace it"):
        refuse_to_replace(tmp_path / "new.json", kept)
    refuse_to_replace(kept, overwrite=True)
    assert kept.read_text() == "mine"
