"""Architecture rules that ruff and mypy cannot see, checked over the repository's Python files.

Each rule keeps one boundary of the layout in README.md: the board layer is the only code that
touches the hardware, the wire protocol is spelled in one module, the bridge's stages stay pure,
and the firmware core cannot tell a virtual board from a real one. Pure stdlib, so it runs before
anything is installed:

    python scripts/check_architecture.py [ROOT]

Prints `path:line: rule: what broke` for each violation, then how to mend each broken rule, then a
summary line; exits 1 when anything broke.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_TOP = {".venv", "build", "var", "results"}  # environments and generated output, not our source
HARDWARE = {"machine", "network", "esp32", "neopixel"}
IMPURE = {"paho", "http", "urllib", "requests", "socket", "sqlite3"}  # http covers http.client
PREFIX = "/".join(("baochay", "v1"))  # joined, or this file would spell it itself
PROTOCOL = "firmware/protocol.py"
VIRTUAL_BOARD = re.compile(r"^board\.virtual\w*(\.|$)")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.what}"


@dataclass(frozen=True)
class Rule:
    name: str
    mend: str
    applies: Callable[[str], bool]
    check: Callable[[str, ast.Module], Iterator[tuple[int, str]]]


# -- what a file imports ------------------------------------------------------------------------


def imports(rel: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, dotted module) for every import, `from m import n` giving both m and m.n, relative
    imports resolved against the file's folder, and __import__/import_module of a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = rel.split("/")[:-1]
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([base] if base else [])])
            if base:
                yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}" if base else alias.name
        elif isinstance(node, ast.Call) and _call_name(node) in ("__import__", "import_module"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _top(module: str) -> str:
    return module.split(".")[0]


def _board_module(module: str) -> str:
    """The firmware imports `board.x` on the device and `firmware.board.x` on CPython."""
    return module.removeprefix("firmware.")


# -- the rules ----------------------------------------------------------------------------------


def _in_board(rel: str) -> bool:
    return rel.startswith("firmware/board/")


def _firmware_core(rel: str) -> bool:
    return rel.startswith("firmware/") and not _in_board(rel)


def hardware_imports(rel: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    return _first_per_line((line, f"imports {_top(m)}") for line, m in imports(rel, tree) if _top(m) in HARDWARE)


def topic_prefix(rel: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    docstrings = {id(d) for d in _docstrings(tree)}  # prose, like docs/*.md, not a topic in use
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            value = node.value
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if isinstance(text, str) and PREFIX in text:
                yield node.lineno, f"spells {PREFIX!r} in {_short(text)!r}"


def _docstrings(tree: ast.Module) -> Iterator[ast.Constant]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    yield first.value


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def impure_stage(rel: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    return _first_per_line((line, f"imports {_top(m)}") for line, m in imports(rel, tree) if _top(m) in IMPURE)


def asks_if_virtual(rel: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, sides[:-1], sides[1:], strict=True):
                for attr, other in ((left, right), (right, left)):
                    if _is_name_attr(attr) and _says_virtual(other, op):
                        yield node.lineno, f"compares {ast.unparse(attr)} with 'virtual'"
        elif isinstance(node, ast.Attribute) and node.attr == "virtual_sensors":
            yield node.lineno, f"reads {ast.unparse(node)}"
        elif isinstance(node, ast.Call) and _call_name(node) in ("getattr", "hasattr") and len(node.args) >= 2:
            arg = node.args[1]
            if isinstance(arg, ast.Constant) and arg.value == "virtual_sensors":
                yield node.lineno, f"{_call_name(node)}(..., 'virtual_sensors')"


def _is_name_attr(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "name"


def _says_virtual(node: ast.expr, op: ast.cmpop) -> bool:
    if isinstance(op, (ast.Eq, ast.NotEq)):
        return isinstance(node, ast.Constant) and node.value == "virtual"
    if isinstance(op, (ast.In, ast.NotIn)) and isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(isinstance(e, ast.Constant) and e.value == "virtual" for e in node.elts)
    return False


def virtual_board_imports(rel: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    return _first_per_line((line, f"imports {_board_module(m)}") for line, m in imports(rel, tree)
                           if VIRTUAL_BOARD.match(_board_module(m)))


def _first_per_line(hits: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """`from machine import Pin` reads as machine and machine.Pin: one import, one violation."""
    seen: set[tuple[int, str]] = set()
    for line, what in hits:
        if (line, what.split(".")[0]) not in seen:
            seen.add((line, what.split(".")[0]))
            yield line, what


RULES = (
    Rule("hardware-outside-board",
         "move the hardware call into firmware/board/ (esp32.py, with its virtual.py twin) and reach it "
         "through the board object",
         lambda rel: not _in_board(rel), hardware_imports),
    Rule("topic-prefix",
         f"build the topic with {PROTOCOL} (protocol.topic, protocol.PREFIX; protocol_host.every for subscriptions) instead of "
         "spelling it",
         lambda rel: rel != PROTOCOL, topic_prefix),
    Rule("impure-stage",
         "keep the stage a function of its inputs: do the I/O in bridge/ingest.py, bridge/service.py or a "
         "sink, and pass the stage what it needs",
         lambda rel: rel.startswith("bridge/stages/"), impure_stage),
    Rule("core-asks-virtual",
         "give the board a capability (a method or attribute both boards define) and let "
         "firmware/board/ decide, instead of testing which board it is",
         _firmware_core, asks_if_virtual),
    Rule("core-imports-virtual-board",
         "get the board from board.create() (firmware/board/__init__.py), which picks the real or virtual one",
         _firmware_core, virtual_board_imports),
)


# -- the walk -----------------------------------------------------------------------------------


def python_files(root: Path) -> Iterator[str]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        top = here == root
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__"
                         and not (top and d in SKIP_TOP))
        for f in sorted(files):
            if f.endswith(".py"):
                yield (here / f).relative_to(root).as_posix()


def check(root: Path) -> tuple[list[Violation], int]:
    """Every violation under root, and how many files were read."""
    found: list[Violation] = []
    count = 0
    for rel in python_files(root):
        count += 1
        try:
            tree = ast.parse((root / rel).read_bytes(), filename=rel)
        except (SyntaxError, ValueError) as e:
            # a file the check cannot read is a file it cannot vouch for
            found.append(Violation(rel, getattr(e, "lineno", None) or 1, "unparsable", str(e)))
            continue
        for rule in RULES:
            if rule.applies(rel):
                found += (Violation(rel, line, rule.name, what) for line, what in rule.check(rel, tree))
    return sorted(set(found), key=lambda v: (v.path, v.line, v.rule, v.what)), count


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]).resolve() if args else ROOT
    found, count = check(root)
    for v in found:
        print(v)
    broken = {v.rule for v in found}
    for rule in RULES:
        if rule.name in broken:
            print(f"mend {rule.name}: {rule.mend}")
    if "unparsable" in broken:
        print("mend unparsable: make the file valid Python 3 syntax")
    print(f"architecture: {len(RULES)} rules, {len(found)} violations in {count} files")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
