"""Check docs/errors.md against the code: every row's message is one that tlkit raises.

The code's user errors are found without running anything: each ``UserError(...)`` (or a
subclass, or the recipes' ``_check(ok, message)``) in ``tlkit/`` becomes a template of its
message, the f-string's fields standing for any text. A catalogue row fits a template when
some message of that template starts the way the row says (``…`` in a row is any text).

    python benchmarks/error_catalogue.py            # rows, and the raise sites no row covers
    python benchmarks/error_catalogue.py --check    # exit 1 if a row fits no raise site

Example:
    >>> site = Site("tlkit/x.py", 1, ("unknown backbone '", None, "'; choose one of: ", None))
    >>> fits_site("Error: unknown backbone 'vgg61'; choose …", site)
    True
    >>> fits_site("Error: unknown optimizer …", site)
    False
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "errors.md"
PACKAGE = ROOT / "tlkit"
# A row: | what the user did | `Error: message` | exit code | [`tests/file.py::test[id]`](...) |
ROW = re.compile(r"^\|(?P<did>.+?)\|\s*`(?P<message>Error: [^`]*)`\s*\|(?P<code>[^|]+)\|"
                 r"\s*\[`(?P<test>tests/[^`]+)`\]\([^)]*\)\s*\|\s*$")
GAP = "…"  # in a catalogue message: any text
PREFIX = "Error: "


@dataclass(frozen=True)
class Site:
    """One place in tlkit that raises a user error; ``parts``: text, or None for a field."""

    file: str
    line: int
    parts: tuple[str | None, ...]

    def shown(self) -> str:
        """The template with its fields as ``{…}``."""
        return "".join("{…}" if part is None else part for part in self.parts)


def catalogue_rows(path: Path = CATALOGUE) -> list[dict[str, str]]:
    """The table rows of the catalogue that name an error, its exit code and its test."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [{key: value.strip() for key, value in match.groupdict().items()}
            for match in map(ROW.match, lines) if match]


def message_fits(message: str, line: str) -> bool:
    """Whether a printed ``line`` starts as the catalogue ``message`` says.

    Example:
        >>> message_fits("Error: run folder '…' exists already", "Error: run folder 'r/x' "
        ...              "exists already; choose another --name")
        True
    """
    pattern = ".*?".join(re.escape(part) for part in message.split(GAP))
    return re.match(pattern, line, re.DOTALL) is not None


# ------------------------------------------------------------------------ raise sites in tlkit


def _joined(parts: list[str | None]) -> tuple[str | None, ...]:
    """Adjacent texts joined, adjacent fields merged."""
    merged: list[str | None] = []
    for part in parts:
        if part == "":
            continue
        if merged and part is not None and merged[-1] is not None:
            merged[-1] = merged[-1] + part  # type: ignore[operator]
        elif not (merged and part is None and merged[-1] is None):
            merged.append(part)
    return tuple(merged)


class _Templates:
    """Message templates of the expressions of one module."""

    def __init__(self, tree: ast.Module) -> None:
        self.functions = {node.name: node for node in ast.walk(tree)
                          if isinstance(node, ast.FunctionDef)}

    def of(self, node: ast.expr, scope: ast.AST | None, depth: int = 0) -> list[str | None]:
        if depth > 5:
            return [None]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.JoinedStr):
            return [value.value if isinstance(value, ast.Constant) else None
                    for value in node.values]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.of(node.left, scope, depth + 1) + self.of(node.right, scope, depth + 1)
        if isinstance(node, ast.Name) and scope is not None:
            value = self._assigned(node.id, scope)
            return [None] if value is None else self.of(value, scope, depth + 1)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            function = self.functions.get(node.func.id)
            returned = function and next((n.value for n in ast.walk(function)
                                          if isinstance(n, ast.Return) and n.value), None)
            if returned is not None:
                return self.of(returned, function, depth + 1)
        return [None]

    @staticmethod
    def _assigned(name: str, scope: ast.AST) -> ast.expr | None:
        values = [node.value for node in ast.walk(scope) if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]
        return values[-1] if len(values) == 1 else None


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """``UserError`` and the classes that derive from it."""
    return {"UserError"} | {node.name for tree in trees.values() for node in ast.walk(tree)
                            if isinstance(node, ast.ClassDef)
                            and any(getattr(base, "id", None) == "UserError"
                                    for base in node.bases)}


def _message_calls(tree: ast.Module, errors: set[str]
                   ) -> Iterator[tuple[ast.expr, ast.AST | None]]:
    """(message expression, enclosing function) of each user error raised in ``tree``."""
    scopes = [(function, node) for function in ast.walk(tree)
              if isinstance(function, ast.FunctionDef) for node in ast.walk(function)]
    enclosing: dict[ast.AST, ast.AST] = {}
    for function, node in scopes:  # innermost last, so it wins
        enclosing[node] = function
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name in errors:
            yield node.args[0], enclosing.get(node)
        elif name == "_check" and len(node.args) == 2:
            yield node.args[1], enclosing.get(node)


def user_error_sites(package: Path = PACKAGE) -> list[Site]:
    """Every user error tlkit raises, as a message template (purely dynamic ones left out)."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8"))
             for path in sorted(package.rglob("*.py"))}
    errors = _error_classes(trees)
    sites = []
    for path, tree in trees.items():
        templates = _Templates(tree)
        for expression, scope in _message_calls(tree, errors):
            parts = _joined(templates.of(expression, scope))
            if any(part is not None for part in parts):
                sites.append(Site(str(path.relative_to(package.parent)), expression.lineno,
                                  parts))
    return sites


# ------------------------------------------------------------------------------------ fitting


def fits_site(message: str, site: Site) -> bool:
    """Whether a message that starts as the catalogue ``message`` says can come from ``site``.

    Both sides have holes (``…`` in the row, fields in the template): the row is run
    through the template as through an automaton whose states are positions in it, kept
    as the bits of an integer. A field could swallow a whole row, so the row must also hold
    some of the template's own text (``anchor``).
    """
    text_length = sum(len(part) for part in site.parts if part is not None)
    return (_runs_through(message.removeprefix(PREFIX), site)
            and anchor(message, site) >= min(MIN_ANCHOR, text_length))


MIN_ANCHOR = 8  # characters of a template's own text that a row must hold to fit it
MIN_PIECE = 4  # shorter pieces (a quote, "st") are found in any row by chance
NEAR_BEST = 0.8


def anchor(message: str, site: Site) -> int:
    """How much of ``site``'s own text the row holds: per text part, the longest start or end
    of it found in the row (a row may stop, or pick up after a gap, inside a part)."""
    text = message.removeprefix(PREFIX)
    return sum(max(_longest(text, part, end=False), _longest(text, part, end=True))
               for part in site.parts if part is not None)


def _longest(message: str, part: str, end: bool) -> int:
    """The length of the longest start (or ``end``) of ``part`` that occurs in ``message``."""
    low, high = 0, len(part)
    while low < high:  # if a piece occurs, so does every shorter piece on the same side
        middle = (low + high + 1) // 2
        piece = part[-middle:] if end else part[:middle]
        low, high = (middle, high) if piece in message else (low, middle - 1)
    return low if low >= MIN_PIECE else 0


def _runs_through(text: str, site: Site) -> bool:
    masks, fields, end = _automaton(site)
    everything = (1 << (end + 1)) - 1

    def closed(states: int) -> int:  # a field may also stand for no text
        while True:
            grown = states | ((states & fields) << 1)
            if grown == states:
                return states
            states = grown

    states = closed(1)
    for number, piece in enumerate(text.split(GAP)):
        if number:  # a gap: any text of the template, from the earliest state on
            states = everything & ~((states & -states) - 1)
        for char in piece:
            states = closed(((states & masks.get(char, 0)) << 1) | (states & fields))
            if not states:
                return False
    return bool(states)


@functools.cache
def _automaton(site: Site) -> tuple[dict[str, int], int, int]:
    """Per character, the bits of the template positions holding it; the fields' bits; the
    end position."""
    tokens: list[str | None] = []
    for part in site.parts:
        tokens += [None] if part is None else list(part)
    masks: dict[str, int] = {}
    for position, token in enumerate(tokens):
        if token is not None:
            masks[token] = masks.get(token, 0) | 1 << position
    fields = sum(1 << position for position, token in enumerate(tokens) if token is None)
    return masks, fields, len(tokens)


def unmatched_rows(rows: list[dict[str, str]], sites: list[Site]) -> list[dict[str, str]]:
    """Rows whose message no raise site can print."""
    return [row for row in rows if not any(fits_site(row["message"], site) for site in sites)]


def covered_sites(rows: list[dict[str, str]], sites: list[Site]) -> set[Site]:
    """The sites each row stands for: of those it fits, the ones whose text it holds (nearly)
    the most of. Two templates alike (a column missing from an image or a text table) are
    both covered by a row that fits both."""
    covered: set[Site] = set()
    for row in rows:
        fitting = {site: anchor(row["message"], site) for site in sites
                   if fits_site(row["message"], site)}
        best = max(fitting.values(), default=0)
        covered |= {site for site, held in fitting.items() if held >= NEAR_BEST * best}
    return covered


def uncovered_sites(rows: list[dict[str, str]], sites: list[Site]) -> list[Site]:
    """Raise sites that no row stands for."""
    covered = covered_sites(rows, sites)
    return [site for site in sites if site not in covered]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that every row fits a raise site (exit 1 if not)")
    args = parser.parse_args(argv)
    rows, sites = catalogue_rows(), user_error_sites()
    unmatched = unmatched_rows(rows, sites)
    print(f"{len(rows)} rows in {CATALOGUE.relative_to(ROOT)}; {len(sites)} raise sites in "
          f"{PACKAGE.relative_to(ROOT)}/")
    for row in unmatched:
        print(f"no raise site prints: {row['message']}  ({row['test']})")
    if not args.check:
        uncovered = uncovered_sites(rows, sites)
        print(f"{len(sites) - len(uncovered)} raise sites covered by a row; not covered:")
        for site in uncovered:
            print(f"  {site.file}:{site.line}: {site.shown()}")
    return 1 if unmatched else 0


if __name__ == "__main__":
    sys.exit(main())
