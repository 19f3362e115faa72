"""SendFile's names as users choose them: counted in bytes (UTF-8), as file systems count them,
up to the 255 a Linux file system takes, written without a trace of the temporary file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudassist.agent.files import FileToWrite, write_file
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.files import FileDraft, check_file

# Names of exactly 255 bytes in UTF-8: the most a Linux file system takes.
LONGEST = ["n" * 255, "設定" * 42 + "..c", "ü" * 127 + "x"]


@pytest.mark.parametrize("name", LONGEST, ids=["ascii", "cjk", "latin"])
def test_a_name_of_255_bytes_is_accepted_and_written_without_a_trace(
    tmp_path: Path, name: str
) -> None:
    assert len(name.encode()) == 255
    spec, content = check_file(FileDraft(name, str(tmp_path), b"x"))
    write_file(FileToWrite(spec.name, spec.target_dir, spec.mode, "", "", overwrite=False), content)
    assert [p.name for p in tmp_path.iterdir()] == [name], "no temporary file left"
    assert (tmp_path / name).read_bytes() == b"x"


@pytest.mark.parametrize("name", ["n" * 256, "設定" * 43, "ü" * 128], ids=["ascii", "cjk", "latin"])
def test_a_name_past_255_bytes_is_refused_saying_how_many_it_has(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_file(FileDraft(name, "/srv", b"x"))
    assert caught.value.field == "name"
    assert f"1 to 255 bytes in UTF-8 (this one has {len(name.encode())})" in str(caught.value)
