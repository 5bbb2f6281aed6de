"""Name resolution for the patch scanner (:mod:`swe_srl.rewards.scan_rules`): what a name,
attribute chain, ``getattr``, ``__import__`` or ``sys.modules[...]`` lookup in one module stands
for, which strings are constant, and which names were reached through ``sys.modules``. Pure."""

from __future__ import annotations

import ast

_BUILTIN_NAMES = frozenset({"getattr", "setattr", "delattr", "__import__", "compile", "exec", "eval", "open", "vars",
                            "globals", "object", "type"})
_IMPORTERS = frozenset({"builtins.__import__", "importlib.import_module", "importlib.__import__"})
_MODULE_LOOKUPS = frozenset({"sys.modules.get", "sys.modules.setdefault", "sys.modules.pop"})
CODE_SUFFIXES = (".py", ".pyw", ".pyc", ".pth")
_CODE_NAMES = ("sitecustomize", "usercustomize", "conftest", "__pycache__")


def const_str(node: ast.AST | None, strings: dict[str, str] | None = None) -> str | None:
    """The string ``node`` always evaluates to (constants, +, f-strings of constants,
    ``"".join`` of constants, names bound to those), else None."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and strings is not None:
        return strings.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = const_str(node.left, strings), const_str(node.right, strings)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.JoinedStr):
        parts = [const_str(v.value if isinstance(v, ast.FormattedValue) else v, strings) for v in node.values]
        return "".join(parts) if all(p is not None for p in parts) else None  # type: ignore[arg-type]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"
            and len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple))):
        sep = const_str(node.func.value, strings)
        parts = [const_str(e, strings) for e in node.args[0].elts]
        return sep.join(parts) if sep is not None and all(p is not None for p in parts) else None  # type: ignore[arg-type]
    return None


class Names:
    """What the names of one module stand for (file-wide, every binding kept: over-approximate)."""

    def __init__(self, tree: ast.AST) -> None:
        self.alias: dict[str, str] = {}
        self.strings: dict[str, str] = {}
        self.values: dict[str, ast.AST] = {}
        self.modvars: set[str] = set()  # names bound to something reached through sys.modules
        self._cache: dict[int, str | None] = {}  # qual per node: a long a.b.c... chain costs linear time
        nodes = list(ast.walk(tree))
        for _ in range(3):  # bindings may come after their use in the file: settle them
            self._cache.clear()
            for node in nodes:
                self._bind(node)
        self._cache.clear()

    def _bind(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                self.alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    self.alias[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    self._bind_name(target.id, node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)) and self.derived(node.iter):
            self.modvars.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))

    def _bind_name(self, name: str, value: ast.AST) -> None:
        self.values[name] = value
        text = const_str(value, self.strings)
        if text is not None:
            self.strings[name] = text
        qual = self.qual(value)
        if qual is not None:
            self.alias[name] = qual
        if self.derived(value) and not own_module(value):
            self.modvars.add(name)

    def qual(self, node: ast.AST) -> str | None:
        """The dotted name ``node`` stands for (``sys._getframe``, ``pytest``), else None."""
        key = id(node)
        if key not in self._cache:
            self._cache[key] = self._qual(node)
        return self._cache[key]

    def _qual(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.alias:
                return self.alias[node.id]
            if node.id == "__builtins__":
                return "builtins"
            return f"builtins.{node.id}" if node.id in _BUILTIN_NAMES else None
        if isinstance(node, ast.Attribute):
            base = self.qual(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Subscript):
            base, key = self.qual(node.value), const_str(node.slice, self.strings)
            if key == "__builtins__" and isinstance(node.value, ast.Call) and self.qual(node.value.func) in (
                    "builtins.globals", "builtins.vars"):
                return "builtins"  # globals()["__builtins__"]
            if base is None or key is None:
                return None
            if base == "sys.modules":
                return key
            if base == "builtins" or base.endswith(".__dict__"):
                return f"{base.removesuffix('.__dict__')}.{key}"
            return None
        if isinstance(node, ast.Call):
            func = self.qual(node.func)
            first = const_str(node.args[0], self.strings) if node.args else None
            if func in _IMPORTERS or func in _MODULE_LOOKUPS:
                return first
            if func == "builtins.getattr" and len(node.args) >= 2:
                base, name = self.qual(node.args[0]), const_str(node.args[1], self.strings)
                return f"{base}.{name}" if base and name else None
            if func == "builtins.vars" and node.args:
                base = self.qual(node.args[0])
                return f"{base}.__dict__" if base else None
        return None

    def derived(self, node: ast.AST) -> bool:
        """``node`` reaches into sys.modules (directly, or through a name bound from it)."""
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id in self.modvars:
                return True
            if isinstance(sub, (ast.Attribute, ast.Name)) and self.qual(sub) == "sys.modules":
                return True
        return False

    def code_path(self, node: ast.AST | None, depth: int = 0) -> str | None:
        """A string in a path expression that names Python code (``x.py``, ``.pth``, ``conftest``)."""
        if node is None or depth > 3:
            return None
        for sub in ast.walk(node):
            text = const_str(sub, self.strings)
            if text is not None and (text.rstrip("'\"").endswith(CODE_SUFFIXES)
                                     or any(n in text for n in _CODE_NAMES)):
                return text
            if isinstance(sub, ast.Name) and sub.id in self.values and self.values[sub.id] is not node:
                found = self.code_path(self.values[sub.id], depth + 1)
                if found:
                    return found
        return None


def own_module(node: ast.AST) -> bool:
    """``sys.modules[__name__]``: the module itself (setting its own names is ordinary)."""
    return (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name) and node.slice.id == "__name__")
