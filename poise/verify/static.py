"""The lint of candidate source: early, friendly messages about what a pure tensor function never needs.

``static_check(source)`` parses the code with ``ast`` and executes nothing. A candidate is a few pure
functions from tensors to tensors, so the rules can be strict: a small import allowlist, no dangerous
builtins, no private or dunder attributes, no torch facility that reaches outside tensor math (files,
processes, the RNG, global settings), no attribute assignment (no monkey-patching), no work at import.

It is a lint, not a boundary: a denylist over a dynamic language cannot be complete. The boundary is
the jailed hook process (``poise.isolation``), where candidate code runs whatever this check says.
What it allows must still be honest, so nothing it allows evaluates text as code (``typing`` only for
its type names, never ``get_type_hints``). The rules are data, at the top, to be read and changed.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field

# Modules a candidate may import, as `import X` / `import X as Y` / `from X import name`.
ALLOWED_IMPORTS = {"torch", "torch.nn", "torch.nn.functional", "math", "__future__"}
# `from typing import X`: type names for annotations only (get_type_hints and friends evaluate strings)
TYPING_NAMES = {"Any", "Optional", "Union", "Tuple", "Dict", "List", "Sequence", "Mapping", "Callable", "Literal"}
# `from poise.algorithms.base import ...`: its public helpers only (not the modules base imports).
BASE_MODULE = "poise.algorithms.base"
BASE_NAMES = {"RolloutBatch", "AlgoConfig", "Tensor", "LOSS_AGG_MODES", "group_mean", "group_std", "group_count",
              "to_tokens", "aggregate", "ppo_clip_loss", "kl_penalty", "default_policy_loss"}

BANNED_CALLS = {"open", "exec", "eval", "compile", "__import__", "getattr", "setattr", "delattr", "globals",
                "locals", "vars", "input", "breakpoint", "exit", "quit", "help", "memoryview", "type", "object"}
ALLOWED_DUNDER_NAMES = {"__name__", "__doc__"}

# Attribute names that leave pure tensor math, rejected anywhere in an attribute chain (`torch.x`,
# `F.x.y`, `t.numpy().x`): files and serialisation, processes, compilation, devices, the global RNG.
BANNED_ATTRS = {
    "load", "save", "hub", "utils", "ops", "jit", "compile", "compiler", "multiprocessing", "distributed",
    "backends", "library", "classes", "package", "onnx", "export", "profiler", "cuda", "mps", "xpu", "mtia",
    "accelerator", "random", "manual_seed", "seed", "from_file", "Storage", "UntypedStorage", "TypedStorage",
    "storage", "untyped_storage", "fx", "autograd", "serialization", "overrides", "cpp", "monitor", "futures",
    "share_memory_", "numpy", "np", "tofile", "fromfile", "memmap", "dump", "dumps", "torch", "modules",
    "use_deterministic_algorithms",
    # `.type("dotted.name")` imports whatever it names (storages and tensors alike); TorchScript compiles text
    "type", "CompilationUnit", "ScriptModule", "ScriptFunction", "classproperty",
    # frame and code objects lead back to any module's globals and to the builtins
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code",
    "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "f_trace", "tb_frame", "tb_next",
}
# private and dunder attributes; torch.set_* global settings; register_* hooks (a global module hook
# would reach into the trainer's own model)
BANNED_ATTR_PREFIXES = ("_", "set_", "register_")
# torch re-exports the stdlib modules it imports (torch.os, torch.sys, F.importlib, ...), so a stdlib
# module name is rejected as an attribute too, except the few that are also tensor functions.
STDLIB_ATTRS = set(sys.stdlib_module_names) - {"chunk", "select", "trace", "copy", "math"}

HOOKS = {"compute_advantages": ("batch", "cfg"), "compute_policy_loss": ("logp", "batch", "advantages", "cfg"),
         "shape_rewards": ("batch", "cfg")}
REQUIRED_HOOK = "compute_advantages"


@dataclass
class StaticReport:
    ok: bool
    errors: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


def static_check(source: str, origin: str = "candidate") -> StaticReport:
    """Check candidate source without executing it. Every error names the problem, the line and the fix."""
    for n, line in enumerate(source.splitlines(), 1):
        bad = [c for c in line if (ord(c) < 32 and c not in "\t\r\f") or ord(c) == 127]
        if bad:
            return StaticReport(False, [f"{origin} line {n}: control character U+{ord(bad[0]):04X} in the source; "
                                        f"remove it (it would reach terminals that show the code)"])
    try:
        tree = ast.parse(source, filename=origin)
    except SyntaxError as e:
        text = f"\n    {e.text.rstrip()}" if e.text else ""
        return StaticReport(False, [f"{origin} line {e.lineno}: syntax error: {e.msg}{text}; fix the syntax"])
    checker = _Checker(origin)
    checker.check_module(tree)
    checker.visit(tree)
    hooks = checker.check_hooks(tree)
    return StaticReport(not checker.errors, checker.errors, hooks)


class _Checker(ast.NodeVisitor):
    def __init__(self, origin: str):
        self.origin = origin
        self.errors: list[str] = []

    def error(self, node: ast.AST, problem: str, fix: str) -> None:
        self.errors.append(f"{self.origin} line {getattr(node, 'lineno', '?')}: {problem}; {fix}")

    # -- the module's shape: loading it must define things, not do work --------------------------

    def check_module(self, tree: ast.Module) -> None:
        self._check_body(tree.body, "at the top level")

    def _check_body(self, body: list[ast.stmt], where: str) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
                continue
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                continue  # a docstring
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and (stmt.value is None or not _runs_code(stmt.value)):
                continue
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                self.error(stmt, f"a call {where}: loading the candidate must not run work",
                           "assign only constants and dicts (CONFIG = {...}) and compute inside the functions")
            elif isinstance(stmt, ast.AsyncFunctionDef):
                self.error(stmt, f"`async def {stmt.name}`: hooks are plain functions", "use `def`")
            else:
                code = ast.unparse(stmt).splitlines()[0][:60]
                self.error(stmt, f"`{code}` {where}: loading the candidate must not run work",
                           "keep only imports, function definitions and constant assignments there")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if node.decorator_list or node.bases or node.keywords:
            self.error(node, f"class `{node.name}` has bases or decorators, which run code at load time",
                       "use a plain class, or better plain functions")
        self._check_body(node.body, f"in class `{node.name}`")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.decorator_list:
            self.error(node, f"decorator on `{node.name}`: decorators run code at load time",
                       "remove it (use `with torch.no_grad():` inside the function instead)")
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            if _runs_code(d):
                self.error(d, f"a default value of `{node.name}` calls a function at load time",
                           "use a constant default and compute inside the function")
        self.generic_visit(node)

    # -- imports -----------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "typing":
                self.error(node, "`import typing` is not allowed (its helpers evaluate strings as code)",
                           "import the type names you annotate with: `from typing import Optional, ...`")
            elif alias.name not in ALLOWED_IMPORTS:
                self.error(node, f"`import {alias.name}` is not allowed",
                           f"a candidate may import only {', '.join(sorted(ALLOWED_IMPORTS - {'__future__'}))} and "
                           f"`from {BASE_MODULE} import ...`")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = "." * node.level + (node.module or "")
        for alias in node.names:
            name = alias.name
            if mod == "typing":
                if name not in TYPING_NAMES:
                    self.error(node, f"`from typing import {name}` is not allowed",
                               f"import only the type names {', '.join(sorted(TYPING_NAMES))}")
            elif mod == BASE_MODULE:
                if name not in BASE_NAMES:
                    self.error(node, f"`from {mod} import {name}`: `{name}` is not one of its public helpers",
                               f"import only {', '.join(sorted(BASE_NAMES))}")
            elif mod in ALLOWED_IMPORTS:
                full = f"{mod}.{name}"
                if name == "*":
                    self.error(node, f"`from {mod} import *` hides which names are used", "import the names explicitly")
                elif full not in ALLOWED_IMPORTS and not mod == "__future__" and self._bad_attr(name):
                    self.error(node, f"`from {mod} import {name}` reaches outside tensor math",
                               "use only tensor operations")
            else:
                self.error(node, f"`from {mod} import {name}` is not allowed",
                           f"a candidate may import only {', '.join(sorted(ALLOWED_IMPORTS - {'__future__'}))} and "
                           f"`from {BASE_MODULE} import ...`")

    # -- names, attributes and calls -----------------------------------------------------------------

    @staticmethod
    def _bad_attr(name: str) -> bool:
        return name in BANNED_ATTRS or name in STDLIB_ATTRS or name.startswith(BANNED_ATTR_PREFIXES) or \
            name.endswith("Storage")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = node.attr
        if name.startswith("_"):
            self.error(node, f"access to the private attribute `.{name}`",
                       "use only public tensor and batch attributes (private and dunder names reach the interpreter)")
        elif name.startswith(("set_", "register_")):
            self.error(node, f"`.{name}` changes a global setting, a tensor's storage or installs a hook",
                       "a candidate must not change global state; compute with tensor operations only")
        elif self._bad_attr(name):  # "_", "set_" and "register_" names were caught just above
            self.error(node, f"`.{name}` reaches outside pure tensor math (files, processes, devices, the RNG)",
                       "use only tensor operations")
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.error(node, f"assignment to the attribute `.{name}`: candidates are pure functions "
                             f"(this would modify torch, the batch or the config)",
                       "bind a local variable instead (x = ...) and return the result")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id.startswith("__") and node.id not in ALLOWED_DUNDER_NAMES:
            self.error(node, f"use of `{node.id}`", "candidates must not touch interpreter internals")
        elif node.id in BANNED_CALLS and isinstance(node.ctx, ast.Load):
            self.error(node, f"use of the builtin `{node.id}`",
                       "it can reach files, code or interpreter internals; compute with tensor operations only")

    def visit_Global(self, node: ast.Global) -> None:
        self.error(node, "a `global` statement: hooks must not keep state between calls",
                   "pass values through arguments and return values")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.error(node, "a `nonlocal` statement: hooks must not keep state between calls",
                   "return values instead")

    def _check_store_target(self, target: ast.expr) -> None:
        # `batch.rewards[m] = 0` writes into the caller's tensor; a local `adv[m] = 0` is fine
        if isinstance(target, ast.Subscript) and any(isinstance(n, ast.Attribute) for n in ast.walk(target.value)):
            self.error(target, "item assignment into an attribute (such as `batch.rewards[...] = ...`) modifies "
                               "the input", "clone it first (x = batch.rewards.clone(); x[...] = ...)")
        for elt in getattr(target, "elts", []):
            self._check_store_target(elt)

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_store_target(t)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store_target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_store_target(t)
        self.generic_visit(node)

    # -- the interface ---------------------------------------------------------------------------------

    def check_hooks(self, tree: ast.Module) -> list[str]:
        defs = {s.name: s for s in tree.body if isinstance(s, ast.FunctionDef)}
        if REQUIRED_HOOK not in defs:
            self.errors.append(f"{self.origin}: no top-level `def {REQUIRED_HOOK}(batch, cfg)`; every candidate "
                               f"must define it and return advantages of shape [N, T] or [N]")
        hooks = []
        for name, params in HOOKS.items():
            if name not in defs:
                continue
            hooks.append(name)
            a = defs[name].args
            pos = a.posonlyargs + a.args
            required = len(pos) - len(a.defaults)
            if required > len(params) or (len(pos) < len(params) and a.vararg is None) or \
                    any(k is None for k in a.kw_defaults):
                got = ", ".join(p.arg for p in pos)
                self.error(defs[name], f"`{name}({got})` has the wrong signature",
                           f"define it as `def {name}({', '.join(params)}):`")
        return hooks


def _runs_code(expr: ast.expr) -> bool:
    """Whether evaluating ``expr`` may run code: a call or a comprehension anywhere in it."""
    return any(isinstance(n, (ast.Call, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Await,
                              ast.Yield, ast.YieldFrom, ast.NamedExpr))
               for n in ast.walk(expr))


def config_literal(code: str) -> str:
    """The module's CONFIG as written (a literal), as sorted JSON, read without executing the code: part of
    a candidate's behaviour beside what its functions return. "{}" when there is none."""
    import json
    value = None
    try:
        for node in ast.parse(code).body:  # the last assignment is the one the module ends with
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CONFIG" for t in node.targets):
                value = ast.literal_eval(node.value)
    except (SyntaxError, ValueError):
        return "{}"
    if value is None:
        return "{}"
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):  # a literal JSON cannot hold (a set, tuple keys): still the module's own text
        return repr(value)
