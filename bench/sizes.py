"""Module and class sizes of the product's code, against the bounds the project keeps: at most
450 lines a module and 250 a class, outside generated code and migrations.

    python bench/sizes.py            # the largest modules and classes; exit 1 past a bound
    python bench/sizes.py --all      # every module and class
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "agent", "client", "common")
# Not written by hand: the migrations' schema steps, and the console's front end (TypeScript).
SKIPPED = ("server/migrations/versions", "server/console/web")
MODULE_LINES = 450
CLASS_LINES = 250


@dataclass(frozen=True)
class Size:
    name: str
    lines: int


def sources() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(SKIPPED) and "node_modules" not in path.parts:
                found.append(path)
    return found


def measure(paths: list[Path]) -> tuple[list[Size], list[Size]]:
    modules, classes = [], []
    for path in paths:
        text = path.read_text()
        relative = path.relative_to(ROOT).as_posix()
        modules.append(Size(relative, len(text.splitlines())))
        for node in ast.walk(ast.parse(text, relative)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                classes.append(Size(f"{relative}:{node.name}", node.end_lineno - node.lineno + 1))
    return modules, classes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="print every module and class")
    parser.add_argument("--top", type=int, default=10, help="how many of each to print [10]")
    args = parser.parse_args()
    modules, classes = measure(sources())
    over = [m for m in modules if m.lines > MODULE_LINES]
    over += [c for c in classes if c.lines > CLASS_LINES]
    for title, sizes, bound in (
        ("modules", modules, MODULE_LINES),
        ("classes", classes, CLASS_LINES),
    ):
        ranked = sorted(sizes, key=lambda s: (-s.lines, s.name))
        shown = ranked if args.all else ranked[: args.top]
        print(f"{len(sizes)} {title} (bound {bound} lines), largest first:")
        for size in shown:
            print(f"  {size.lines:5d}  {size.name}")
    total = sum(m.lines for m in modules)
    print(f"{total} lines in {len(modules)} modules")
    for size in over:
        print(f"over its bound: {size.name} ({size.lines} lines)", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
