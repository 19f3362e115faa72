"""Shell completion scripts for bash, zsh and fish, generated from the argparse parser.

The parser is walked once into a table: for each command path (``""``, ``"commands"``,
``"commands create"``, ...) its subcommands, its options, which options take a value, their
choices, and which values are local files. Each shell's script holds that table as functions
and, at completion time, walks the words typed so far to find the path.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
PROG = "cloudassist"
# Options whose value is a file on this machine.
_FILE_DESTS = frozenset({"file", "ca"})
_HELP_CHARS = 70


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    file: bool = False

    @property
    def offered(self) -> str:
        """The flag to offer: the long one when there is one."""
        longs = [f for f in self.flags if f.startswith("--")]
        return longs[0] if longs else self.flags[0]


@dataclass
class Level:
    """One command path and what can follow it."""

    path: str
    subcommands: dict[str, str] = field(default_factory=dict)
    options: list[Option] = field(default_factory=list)
    # Choices of a positional argument (`completion bash|zsh|fish`).
    positional_choices: tuple[str, ...] = ()

    def value_flags(self) -> list[str]:
        return [f for o in self.options if o.takes_value for f in o.flags]

    def file_flags(self) -> list[str]:
        return [f for o in self.options if o.file for f in o.flags]


def _subparsers(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    sub = _subparsers(parser)
    if sub is not None:
        for name, child in sub.choices.items():
            yield from _walk(child, (*path, name))


def leaf_parsers(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """The parsers of commands that have no subcommands, by their path (`("commands",
    "create")`)."""
    return {path: p for path, p in _walk(parser) if path and _subparsers(p) is None}


def _help_text(action: argparse.Action) -> str:
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        text = text % {**vars(action), "prog": PROG}
    text = " ".join(text.split())
    return text if len(text) <= _HELP_CHARS else text[: _HELP_CHARS - 1] + "…"


def levels(parser: argparse.ArgumentParser) -> list[Level]:
    """The completion table of `parser`, root first."""
    found = []
    for path, p in _walk(parser):
        level = Level(" ".join(path))
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: _help_text(a) for a in action._choices_actions}
                level.subcommands = {name: helps.get(name, "") for name in action.choices}
            elif action.option_strings:
                level.options.append(
                    Option(
                        flags=tuple(action.option_strings),
                        help=_help_text(action),
                        takes_value=action.nargs != 0,
                        choices=tuple(str(c) for c in action.choices or ()),
                        file=action.type is Path or action.dest in _FILE_DESTS,
                    )
                )
            elif action.choices and not level.positional_choices:
                level.positional_choices = tuple(str(c) for c in action.choices)
        found.append(level)
    return found


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    table = levels(parser)
    if shell == "bash":
        return bash_script(table)
    if shell == "zsh":
        return zsh_script(table)
    if shell == "fish":
        return fish_script(table)
    raise ValueError(f"no completion for {shell!r}; known: {', '.join(SHELLS)}")


# bash and zsh ---------------------------------------------------------------------------


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _case_function(name: str, cases: dict[str, str]) -> list[str]:
    """A POSIX-style function printing the words of its first argument's case."""
    lines = [f"{name}() {{", '    case "$1" in']
    for key, words in cases.items():
        if words:
            lines.append(f"        {_sh_quote(key)}) printf '%s\\n' {words} ;;")
    lines += ["    esac", "}"]
    return lines


def _words(items: list[str] | tuple[str, ...]) -> str:
    return " ".join(_sh_quote(i) for i in items)


def _table_functions(table: list[Level], prefix: str) -> list[str]:
    """The completion table as shell functions (the same text works in bash and zsh)."""
    lines: list[str] = []
    lines += _case_function(
        f"{prefix}_subcommands", {lv.path: _words(list(lv.subcommands)) for lv in table}
    )
    lines += _case_function(
        f"{prefix}_options", {lv.path: _words([o.offered for o in lv.options]) for lv in table}
    )
    lines += _case_function(
        f"{prefix}_value_flags", {lv.path: _words(lv.value_flags()) for lv in table}
    )
    lines += _case_function(
        f"{prefix}_file_flags", {lv.path: _words(lv.file_flags()) for lv in table}
    )
    lines += _case_function(
        f"{prefix}_positionals", {lv.path: _words(lv.positional_choices) for lv in table}
    )
    choices = {
        f"{lv.path}|{flag}": _words(o.choices)
        for lv in table
        for o in lv.options
        if o.choices
        for flag in o.flags
    }
    lines += _case_function(f"{prefix}_choices", choices)
    return lines


# Walks the words before the cursor: words that name a subcommand extend the path, option
# values are skipped. Shared by bash and zsh (arrays differ: bash counts from 0, zsh from 1).
_WALK = """\
    local cmdpath="" word skip="" i
    for ((i = {first}; i < {cursor}; i++)); do
        word=${{{words}[i]}}
        if [[ -n $skip ]]; then skip=""; continue; fi
        if [[ $word == -* ]]; then
            [[ $word != *=* ]] &&
                _cloudassist_in "$word" $(_cloudassist_value_flags "$cmdpath") && skip=1
            continue
        fi
        if _cloudassist_in "$word" $(_cloudassist_subcommands "$cmdpath"); then
            cmdpath=${{cmdpath:+$cmdpath }}$word
        fi
    done"""

_IN = """\
_cloudassist_in() {
    local word=$1 candidate
    shift
    for candidate in "$@"; do
        [[ $candidate == "$word" ]] && return 0
    done
    return 1
}"""


def bash_script(table: list[Level]) -> str:
    walk = _WALK.format(first=1, cursor="COMP_CWORD", words="COMP_WORDS")
    lines = [
        f"# bash completion for {PROG}; generated by `{PROG} completion bash`.",
        f"# Install: {PROG} completion bash > /etc/bash_completion.d/{PROG}",
        f"#      or: source <({PROG} completion bash)   (in ~/.bashrc)",
        *_table_functions(table, "_cloudassist"),
        _IN,
        "_cloudassist() {",
        walk,
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    COMPREPLY=()",
        "    if [[ -n $skip ]]; then",
        '        local choices=$(_cloudassist_choices "$cmdpath|$prev")',
        "        if [[ -n $choices ]]; then",
        '            COMPREPLY=($(compgen -W "$choices" -- "$cur"))',
        '        elif _cloudassist_in "$prev" $(_cloudassist_file_flags "$cmdpath"); then',
        '            COMPREPLY=($(compgen -f -- "$cur"))',
        "        fi",
        "        return 0",
        "    fi",
        "    if [[ $cur == -* ]]; then",
        '        COMPREPLY=($(compgen -W "$(_cloudassist_options "$cmdpath")" -- "$cur"))',
        "    else",
        '        COMPREPLY=($(compgen -W "$(_cloudassist_subcommands "$cmdpath") '
        '$(_cloudassist_positionals "$cmdpath")" -- "$cur"))',
        "    fi",
        "}",
        f"complete -F _cloudassist {PROG}",
        "",
    ]
    return "\n".join(lines)


def _zsh_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def _zsh_described(name: str, cases: dict[str, list[tuple[str, str]]]) -> list[str]:
    """A function printing `word:description` lines for _describe."""
    lines = [f"{name}() {{", '    case "$1" in']
    for key, pairs in cases.items():
        if pairs:
            entries = " ".join(_sh_quote(f"{_zsh_escape(w)}:{d}") for w, d in pairs)
            lines.append(f"        {_sh_quote(key)}) printf '%s\\n' {entries} ;;")
    lines += ["    esac", "}"]
    return lines


def zsh_script(table: list[Level]) -> str:
    walk = _WALK.format(first=2, cursor="CURRENT", words="words")
    lines = [
        f"#compdef {PROG}",
        f"# zsh completion for {PROG}; generated by `{PROG} completion zsh`.",
        f'# Install: {PROG} completion zsh > "${{fpath[1]}}/_{PROG}"',
        f"#      or: source <({PROG} completion zsh)   (in ~/.zshrc, after compinit)",
        *_table_functions(table, "_cloudassist"),
        *_zsh_described(
            "_cloudassist_described_subcommands",
            {
                lv.path: [*lv.subcommands.items(), *((c, "") for c in lv.positional_choices)]
                for lv in table
            },
        ),
        *_zsh_described(
            "_cloudassist_described_options",
            {lv.path: [(o.offered, o.help) for o in lv.options] for lv in table},
        ),
        _IN,
        "_cloudassist() {",
        walk,
        "    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}",
        "    if [[ -n $skip ]]; then",
        '        local -a choices=(${(f)"$(_cloudassist_choices "$cmdpath|$prev")"})',
        "        if (( ${#choices} )); then",
        "            compadd -a choices",
        '        elif _cloudassist_in "$prev" $(_cloudassist_file_flags "$cmdpath"); then',
        "            _files",
        "        fi",
        "        return",
        "    fi",
        "    local -a described",
        "    if [[ $cur == -* ]]; then",
        '        described=(${(f)"$(_cloudassist_described_options "$cmdpath")"})',
        "        _describe -t options option described",
        "    else",
        '        described=(${(f)"$(_cloudassist_described_subcommands "$cmdpath")"})',
        "        _describe -t commands command described",
        "    fi",
        "}",
        "if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then",
        '    _cloudassist "$@"',
        "else",
        f"    compdef _cloudassist {PROG}",
        "fi",
        "",
    ]
    return "\n".join(lines)


# fish -----------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_switch(name: str, cases: dict[str, list[str]]) -> list[str]:
    lines = [f"function {name}", "    switch $argv[1]"]
    for key, words in cases.items():
        if words:
            lines += [
                f"        case {_fish_quote(key)}",
                "            printf '%s\\n' " + " ".join(_fish_quote(w) for w in words),
            ]
    lines += ["    end", "end"]
    return lines


def fish_script(table: list[Level]) -> str:
    lines = [
        f"# fish completion for {PROG}; generated by `{PROG} completion fish`.",
        f"# Install: {PROG} completion fish > ~/.config/fish/completions/{PROG}.fish",
        *_fish_switch("__cloudassist_subcommands", {lv.path: list(lv.subcommands) for lv in table}),
        *_fish_switch("__cloudassist_value_flags", {lv.path: lv.value_flags() for lv in table}),
        "# The command path typed so far: words naming subcommands, option values skipped.",
        "function __cloudassist_path",
        "    set -l path",
        "    set -l skip 0",
        "    for word in (commandline -opc)[2..-1]",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        if string match -q -- '-*' $word",
        "            if not string match -q -- '*=*' $word",
        '                and contains -- $word (__cloudassist_value_flags "$path")',
        "                set skip 1",
        "            end",
        "            continue",
        "        end",
        '        if contains -- $word (__cloudassist_subcommands "$path")',
        "            set -a path $word",
        '            set path "$path"',
        "        end",
        "    end",
        '    echo "$path"',
        "end",
        "function __cloudassist_at",
        "    set -l path (__cloudassist_path)",
        '    test "$path" = "$argv[1]"',
        "end",
        f"complete -c {PROG} -f",
    ]
    for lv in table:
        condition = f"-n {_fish_quote('__cloudassist_at ' + _fish_quote(lv.path))}"
        for name, text in lv.subcommands.items():
            lines.append(
                f"complete -c {PROG} {condition} -a {_fish_quote(name)} -d {_fish_quote(text)}"
            )
        if lv.positional_choices:
            words = " ".join(lv.positional_choices)
            lines.append(f"complete -c {PROG} {condition} -a {_fish_quote(words)}")
        for option in lv.options:
            spec = []
            for flag in option.flags:
                if flag.startswith("--"):
                    spec.append(f"-l {flag[2:]}")
                elif len(flag) == 2:
                    spec.append(f"-s {flag[1]}")
                else:
                    spec.append(f"-o {flag[1:]}")
            if option.choices:
                spec.append(f"-x -a {_fish_quote(' '.join(option.choices))}")
            elif option.file:
                spec.append("-r -F")
            elif option.takes_value:
                spec.append("-x")
            lines.append(
                f"complete -c {PROG} {condition} {' '.join(spec)} -d {_fish_quote(option.help)}"
            )
    lines.append("")
    return "\n".join(lines)
