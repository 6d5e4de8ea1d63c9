#!/usr/bin/env python
"""Code-shape report: modules over 500 lines and functions over 80 lines in ``genssl_hf/``.

The project's hygiene rule is "modules <= 500 lines, functions <= 80 lines unless a comment says
why". This prints one markdown table: every module over the module limit and every function
(methods and nested functions included) over the function limit, with a column saying whether a
``# long:`` comment explains it.

    python benchmarks/code_shape.py            # the table
    python benchmarks/code_shape.py --check    # also exit 1 on a breach

How things are measured:

* a module's length is its number of lines (``len(text.splitlines())``);
* a function's length runs from its ``def`` line to its last line, docstring and blank lines
  included, decorators not (``end_lineno - lineno + 1`` from :mod:`ast`);
* a function is explained when the comment block directly above it (above its decorators, if any;
  no blank line in between) holds a line starting with ``# long:``.

``--check`` fails when any module is over the module limit (a ``# long:`` comment does not excuse
a module) or any long function has no ``# long:`` comment. Run it from anywhere: paths are taken
relative to this checkout.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genssl_hf"
MODULE_LIMIT = 500
FUNCTION_LIMIT = 80
LONG_MARKER = "# long:"


@dataclass(frozen=True)
class Finding:
    kind: str  # "module" or "function"
    path: str  # relative to the checkout root
    name: str  # qualified name for functions, "" for modules
    line: int
    length: int
    reason: str | None  # the ``# long:`` text, or None

    @property
    def ok(self) -> bool:
        """A module never passes over the limit; a function passes when it says why."""
        return self.kind == "function" and self.reason is not None


def _long_reason(lines: list[str], node: ast.AST) -> str | None:
    """The ``# long:`` text in the comment block directly above ``node`` (and its decorators)."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    index = first - 2  # 0-based index of the line above
    while index >= 0 and lines[index].lstrip().startswith("#"):
        text = lines[index].strip()
        if text.startswith(LONG_MARKER):
            return text[len(LONG_MARKER) :].strip()
        index -= 1
    return None


def _functions(tree: ast.AST):
    """(qualified name, node) for every function and method, nested ones included."""

    def visit(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def scan(
    package: Path = PACKAGE, module_limit: int = MODULE_LIMIT, function_limit: int = FUNCTION_LIMIT
) -> list[Finding]:
    """Every over-limit module and function under ``package``, in path then line order."""
    findings: list[Finding] = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        rel = path.relative_to(package.parent).as_posix()
        if len(lines) > module_limit:
            findings.append(Finding("module", rel, "", 1, len(lines), None))
        for name, node in _functions(ast.parse(text, filename=str(path))):
            length = node.end_lineno - node.lineno + 1
            if length > function_limit:
                findings.append(Finding("function", rel, name, node.lineno, length, _long_reason(lines, node)))
    return findings


def table(findings: list[Finding]) -> str:
    """The findings as one markdown table."""
    rows = ["| kind | where | name | lines | `# long:` comment |", "|---|---|---|---:|---|"]
    for f in findings:
        if f.kind == "module":
            note = "n/a (module: must be split)"
        else:
            note = f"yes: {f.reason}" if f.reason is not None else "**no**"
        rows.append(f"| {f.kind} | `{f.path}:{f.line}` | {f'`{f.name}`' if f.name else ''} | {f.length} | {note} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a module is over the limit or a long function has no '# long:' comment",
    )
    parser.add_argument("--module-limit", type=int, default=MODULE_LIMIT)
    parser.add_argument("--function-limit", type=int, default=FUNCTION_LIMIT)
    args = parser.parse_args(argv)

    findings = scan(PACKAGE, args.module_limit, args.function_limit)
    print(table(findings))
    breaches = [f for f in findings if not f.ok]
    n_modules = sum(f.kind == "module" for f in findings)
    n_functions = sum(f.kind == "function" for f in findings)
    print(
        f"\n{n_modules} module(s) over {args.module_limit} lines, {n_functions} function(s) over "
        f"{args.function_limit} lines, {len(breaches)} breach(es) (over-limit modules + long functions "
        f"without '{LONG_MARKER}')."
    )
    if args.check and breaches:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
