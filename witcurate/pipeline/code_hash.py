"""The hash of the code a stage runs, so that a code change redoes exactly the stages it touches.

A stage's code is its own module plus every `witcurate` module it imports, directly or through
others, found by reading the `import` statements (including those inside functions) rather than
by importing anything. Left out, with what they import: `witcurate.config` (with its range
checks) and `witcurate.errors` (how a config is parsed or checked or an error worded does not
change a stage's output, and the config values a stage reads are already in its fingerprint
through the config hash), and the runner and stage registry, which every stage imports for its
contracts but which write no stage's rows. Without this, a fix in a
filter would leave finished stages standing until somebody bumped the version or passed --force.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re

import witcurate

PACKAGE = "witcurate"
ROOT = os.path.dirname(os.path.abspath(witcurate.__file__))
NOT_CODE = frozenset({"witcurate.config", "witcurate.config_checks", "witcurate.errors",
                      "witcurate.pipeline.runner", "witcurate.pipeline.stages",
                      "witcurate.pipeline.code_hash"})


@functools.lru_cache(maxsize=None)
def _source(module: str) -> tuple[str, bytes] | None:
    """(kind, bytes) of a package module's source file, found on disk without importing it:
    "pkg" for a package's __init__.py, "mod" for a module; None for anything else."""
    base = os.path.join(ROOT, *module.split(".")[1:])
    for kind, path in (("mod", base + ".py"), ("pkg", os.path.join(base, "__init__.py"))):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return kind, f.read()
    return None


# An import statement at the start of a line: `from X import names` (names in parentheses may
# span lines) or `import names`. Text in a string that reads as an import can only add a
# module to the closure, which redoes a stage more often, never less.
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)|import[ \t]+([^\n]*))",
                     re.MULTILINE)


def _names(text: str) -> list[str]:
    """The imported names of an import list (`a.b as c, d`, parentheses, a trailing comment)."""
    text = "\n".join(line.partition("#")[0] for line in text.strip("()").splitlines())
    return [part.split()[0] for part in text.replace("\\", " ").split(",") if part.strip()]


@functools.lru_cache(maxsize=None)
def _imports(module: str, kind: str, source: bytes) -> frozenset[str]:
    """Names of the package's modules that `module`'s source imports (candidates: a name in
    `from a.b import c` may be the module a.b.c or an attribute of a.b; both are tried). Found
    by a pattern over the source's lines, not by parsing it: parsing every module in a stage's
    closure was 0.1 s of each stage run (tests/test_runner.py checks that the pattern finds every
    name the parser finds, in every module of the package). Kept per source: every stage's
    closure walks the shared modules again."""
    package = module if kind == "pkg" else module.rpartition(".")[0]
    found: set[str] = set()
    for base, names, plain in _IMPORT.findall(source.decode("utf-8")):
        if plain:
            found.update(_names(plain))
            continue
        level = len(base) - len(base.lstrip("."))
        base = base[level:]
        if level:
            parts = package.split(".")
            parts = parts[: len(parts) - level + 1]
            base = ".".join(parts + ([base] if base else []))
        found.add(base)
        found.update(f"{base}.{name}" for name in _names(names))
    return frozenset(name for name in found if name == PACKAGE or name.startswith(PACKAGE + "."))


def _parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.lru_cache(maxsize=None)
def module_closure(module: str) -> tuple[str, ...]:
    """`module` and every package module it reaches through imports, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        found = _source(name)
        if found is None:                       # an attribute, not a module
            continue
        seen.add(name)
        todo.extend(_parents(name))
        if name in NOT_CODE and name != module:
            continue                    # not the stage's code, nor is what it imports for itself
        todo.extend(_imports(name, *found))
    return tuple(sorted(seen - NOT_CODE))


def code_hash(module: str) -> str:
    """sha256 over the sources of `module`'s closure (names included), 16 hex digits."""
    digest = hashlib.sha256()
    for name in module_closure(module):
        digest.update(name.encode() + b"\0" + _source(name)[1] + b"\0")
    return digest.hexdigest()[:16]
