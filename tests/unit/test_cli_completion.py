"""Shell completion generated from the parser, and the parser's global flags."""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from cloudassist.client import completion
from cloudassist.client.cli import main
from cloudassist.client.parser import build_parser


def bash_completes(script: Path, *words: str) -> list[str]:
    """What the generated bash completion offers for `words` (the last is being typed)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is not installed: the completion tests run the script in it")
    words_array = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({words_array}); COMP_CWORD={len(words) - 1}\n"
        '_cloudassist; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "cloudassist.bash"
    path.write_text(completion.script("bash", build_parser()))
    return path


def test_bash_completes_commands(bash_script: Path) -> None:
    assert bash_completes(bash_script, "cloudassist", "inv") == ["invoke", "invocations"]
    assert bash_completes(bash_script, "cloudassist", "commands", "c") == ["create"]
    assert bash_completes(bash_script, "cloudassist", "keys", "") == ["create", "list", "revoke"]
    assert bash_completes(bash_script, "cloudassist", "completion", "") == ["bash", "zsh", "fish"]
    # Global options and their values come before the command, and are skipped over.
    words = ("cloudassist", "--server", "h:1", "--color", "never", "comm")
    assert bash_completes(bash_script, *words) == ["commands"]


def test_bash_completes_options_and_their_values(bash_script: Path, tmp_path: Path) -> None:
    assert bash_completes(bash_script, "cloudassist", "run", "--ty") == ["--type"]
    assert bash_completes(bash_script, "cloudassist", "run", "--type", "") == [
        "bat",
        "powershell",
        "shell",
    ]
    assert bash_completes(bash_script, "cloudassist", "--color", "a") == ["auto", "always"]
    assert bash_completes(bash_script, "cloudassist", "results", "--status", "f") == [
        "failed",
        "finished",
    ]
    (tmp_path / "deploy.sh").write_text("true\n")
    typed = str(tmp_path / "dep")
    assert bash_completes(bash_script, "cloudassist", "run", "--file", typed) == [
        str(tmp_path / "deploy.sh")
    ]
    # The value of an option that is not a file or a choice: nothing to offer.
    assert bash_completes(bash_script, "cloudassist", "commands", "create", "--name", "") == []


def test_every_command_and_option_is_in_every_script() -> None:
    parser = build_parser()
    table = completion.levels(parser)
    scripts = {shell: completion.script(shell, parser) for shell in completion.SHELLS}
    leaves = completion.leaf_parsers(parser)
    assert {tuple(level.path.split()) for level in table if level.path} >= set(leaves)
    for path, leaf in leaves.items():
        flags = [f for action in leaf._actions for f in action.option_strings]
        assert "--json" in flags or path == ("completion",)
        for shell, text in scripts.items():
            assert f"'{path[-1]}'" in text, (shell, path)
            for flag in flags:
                if flag.startswith("--"):
                    # fish names long flags without their dashes (`-l json`).
                    assert (flag if shell != "fish" else f"-l {flag[2:]}") in text, (shell, flag)


def test_zsh_and_fish_scripts_register_themselves() -> None:
    parser = build_parser()
    zsh = completion.script("zsh", parser)
    assert zsh.startswith("#compdef cloudassist\n")
    assert "compdef _cloudassist cloudassist" in zsh
    # _describe entries: `word:description`, with colons in the word escaped.
    assert "'invoke:run a saved command on instances'" in zsh
    fish = completion.script("fish", parser)
    assert (
        "complete -c cloudassist -n '__cloudassist_at \\'commands\\'' -a 'create' "
        "-d 'save a script as a command'"
    ) in fish
    assert "-l color -x -a 'auto always never'" in fish


def test_unknown_shell() -> None:
    with pytest.raises(ValueError, match="no completion for 'tcsh'"):
        completion.script("tcsh", build_parser())


def test_completion_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    main(["completion", "bash"])
    assert capsys.readouterr().out == completion.script("bash", build_parser())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"cloudassist {version('cloudassist')}\n"


def test_json_and_color_flags() -> None:
    parser = build_parser()
    assert parser.parse_args(["invocations"]).json is False
    assert parser.parse_args(["--json", "invocations"]).json is True
    assert parser.parse_args(["invocations", "--json"]).json is True
    assert parser.parse_args(["commands", "list", "--json"]).json is True
    assert parser.parse_args(["invocations"]).color == "auto"
    assert parser.parse_args(["--color", "never", "invocations"]).color == "never"
