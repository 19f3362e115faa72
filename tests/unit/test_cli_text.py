"""Command-line arguments as a terminal in another encoding passes them: a script is sent as
the bytes it is, other text that is not UTF-8 is a local error naming the argument."""

from __future__ import annotations

import argparse
import os

import pytest

from cloudassist.client.flags import check_text
from cloudassist.client.parser import build_parser


def _args(*argv: bytes | str) -> argparse.Namespace:
    """The CLI's arguments as Python decodes them from what a shell passes (bytes)."""
    return build_parser().parse_args([os.fsdecode(a) for a in argv])


def test_a_script_and_a_file_name_may_be_any_bytes() -> None:
    args = _args("run", "-i", "i-a", "--working-dir", "/srv/ü", b"echo caf\xe9")
    assert check_text(args) is args
    assert check_text(_args("run", "-i", "i-a", "--file", b"/tmp/caf\xe9.sh")) is not None
    assert check_text(_args("commands", "create", "--name", "n", "--content", b"\xe9")) is not None


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "-i", "i-a", "-p", b"who=\xe9", "echo {{who}}"], "parameter"),
        (["run", "-i", b"i-\xe9", "true"], "instance"),
        (["commands", "create", "--name", b"caf\xe9", "--content", "true"], "name"),
        (["tag", "-i", "i-a", "-t", b"k=\xe9"], "tag"),
        (["--region", b"cn-\xe9", "instances"], "region"),
    ],
)
def test_text_that_is_not_utf8_is_a_local_error_naming_it(
    argv: list[str | bytes], named: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        check_text(_args(*argv))
    message = str(caught.value.code)
    assert message.startswith(f"cloudassist: {named}: b'"), message
    assert "\\xe9" in message
    assert "is not UTF-8 text" in message
