"""What systemd makes of a service unit: its command line and environment, read the way
systemd reads them (for the settings our units use; anything else fails loudly), so that the
tests can start a unit's ExecStart as systemd would."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# What systemd gives every system service before Environment= and EnvironmentFile=.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"


@dataclass
class Unit:
    path: Path
    # Every setting of each section, in order (a key may repeat).
    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def values(self, section: str, key: str) -> list[str]:
        return [v for k, v in self.sections.get(section, []) if k == key]

    def value(self, section: str, key: str) -> str:
        values = self.values(section, key)
        assert len(values) == 1, f"{self.path.name}: {key}= is set {len(values)} times"
        return values[0]

    def exec_start(self, paths: dict[str, Path]) -> list[str]:
        """ExecStart as argv, each path prefix in `paths` replaced by where it is here."""
        line = self.value("Service", "ExecStart")
        if re.match(r"[-@:+!]", line) or "$" in line or "%" in line:
            raise ValueError(f"ExecStart prefixes and expansions are not handled: {line}")
        return [_mapped(arg, paths) for arg in shlex.split(line)]

    def assignments(self) -> dict[str, str]:
        """The Environment= settings, in order (a later one wins)."""
        env: dict[str, str] = {}
        for setting in self.values("Service", "Environment"):
            assert "%" not in setting.replace("%%", ""), f"specifiers are not handled: {setting}"
            for assignment in shlex.split(setting.replace("%%", "%")):
                name, sep, value = assignment.partition("=")
                assert sep, f"not NAME=VALUE: {assignment!r}"
                env[name] = value
        return env

    def environment(self, paths: dict[str, Path]) -> dict[str, str]:
        """The service's environment: Environment= settings, then the EnvironmentFile=s over
        them (a path with a leading '-' may be missing), each path mapped as in exec_start."""
        env = {"PATH": SERVICE_PATH, **self.assignments()}
        for setting in self.values("Service", "EnvironmentFile"):
            optional = setting.startswith("-")
            path = Path(_mapped(setting.removeprefix("-"), paths))
            if path.exists() or not optional:
                env.update(read_env_file(path))
        return env


def _mapped(text: str, paths: dict[str, Path]) -> str:
    for prefix, here in paths.items():
        if text == prefix or text.startswith(prefix.rstrip("/") + "/"):
            return str(here) + text[len(prefix) :]
    return text


def read_unit(path: Path) -> Unit:
    unit = Unit(path)
    section: list[tuple[str, str]] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            raise ValueError(f"{path.name}:{number}: continuations are not handled")
        if line.startswith("[") and line.endswith("]"):
            section = unit.sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise ValueError(f"{path.name}:{number}: not KEY=VALUE in a section: {line}")
        section.append((key.strip(), value.strip()))
    return unit


_DOUBLE_ESCAPES = re.compile(r'\\([\\"`$])')


def read_env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile: NAME=VALUE lines, comments (# or ;), values plain (backslash
    escapes), 'single-quoted' (verbatim) or "double-quoted" (\\ \" \\` \\$ escapes)."""
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        if not sep:
            continue  # systemd ignores lines without '='
        value = value.strip()
        quote = value[:1]
        if quote in ("'", '"') and (len(value) < 2 or not value.endswith(quote)):
            raise ValueError(f"{path}:{number}: a quoted value must end its line")
        if quote == "'":
            value = value[1:-1]
        elif quote == '"':
            value = _DOUBLE_ESCAPES.sub(r"\1", value[1:-1])
        else:
            if value.endswith("\\"):
                raise ValueError(f"{path}:{number}: continuations are not handled")
            value = re.sub(r"\\(.)", r"\1", value)
        env[name.strip()] = value
    return env
