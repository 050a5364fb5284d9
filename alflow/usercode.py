"""Importing the user code a configuration names: ``ase:package.module.Class`` calculators and
``module:function`` collective variables.

A campaign YAML is code: importing a named module runs its top-level code, as ``worker_init``
lines run in a shell (docs/hpc.md). What is imported is kept to what is named: the name must be
a dotted Python identifier, the module must exist, and when its source is a Python file the
name must be defined there (read with :mod:`ast`, not run) before the module is imported; a
name the module does not define, or a function where a class is wanted, is refused without
running anything of it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from typing import Any

from alflow.errors import ConfigError


def _top_level_names(tree: ast.Module) -> tuple[dict[str, ast.AST], bool]:
    """Names bound at module level -> their defining node; whether a ``*`` import is there."""
    names: dict[str, ast.AST] = {}
    star = False
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                star |= alias.name == "*"
                names[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = node
        elif isinstance(node, ast.If | ast.Try | ast.With):  # conditional definitions
            body = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            for h in getattr(node, "handlers", []):
                body += h.body
            inner, s = _top_level_names(ast.Module(body=body, type_ignores=[]))
            names.update(inner)
            star |= s
    return names, star


def import_named(module: str, name: str, field: str, want_class: bool = False) -> Any:
    """``getattr(import_module(module), name)`` after the checks of the module doc;
    ConfigError naming ``field`` otherwise."""
    spec_text = f"{module}.{name}"
    if not (module and all(p.isidentifier() for p in module.split(".")) and name.isidentifier()):
        raise ConfigError(f"{field}: {spec_text!r} is not a dotted Python name")
    if module not in sys.modules:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"{field}: cannot import {module!r}: {err}") from None
        if spec is None:
            raise ConfigError(f"{field}: no module named {module!r}")
        origin = spec.origin or ""
        if origin.endswith(".py"):
            try:
                with open(origin, "rb") as fh:
                    tree = ast.parse(fh.read(), filename=origin)
            except (OSError, SyntaxError, ValueError) as err:
                raise ConfigError(f"{field}: cannot read {origin}: {err}") from None
            names, star = _top_level_names(tree)
            node = names.get(name)
            if node is None and not star:
                raise ConfigError(f"{field}: {module} ({origin}) defines no {name!r}; nothing "
                                  "of it was run")
            if want_class and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                raise ConfigError(f"{field}: {spec_text} is a function, not a class; nothing "
                                  "of it was run")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{field}: cannot import {spec_text!r}: {err}") from None
