"""What the task's test files define, computed OUTSIDE the test process (runs inside the grading
container as root, with ``python -I`` from ``/``: no code of the repository is imported).

Usage: ``python -I fingerprint.py REPO OUT TEST_FILE...``. Writes JSON to OUT:

- ``files``: per test file, the fingerprint of every code object it compiles to (module, classes,
  functions, lambdas), mapped to the code's name. Computed for the file compiled as Python does
  and as pytest's assertion rewriting does (with and without its pass hook), since pytest runs
  whichever applies. The launcher's audit hook hashes the code objects of the test run the same
  way (``guard_hook.install``'s ``fingerprint``: keep the two identical).
- ``marked``: per test file, the tests the file itself marks as allowed to skip or xfail
  (decorators, ``pytestmark``, skip/xfail/importorskip calls in the body; ``*`` for the module).

Run after the task's test patch is applied and before any test runs: the file as the task ships it.
It also shows that the image can run pytest at all (it imports pytest; exit 3 when it cannot),
which nothing of the model's patch can change: it runs from ``/`` and reads only the test files.
"""

import ast
import hashlib
import json
import os
import sys

_MARK_WORDS = frozenset({"xfail", "skip", "skipif", "skipIf", "skipUnless", "expectedFailure", "importorskip",
                         "skipTest", "SkipTest"})


def fingerprint(code):
    """A hash of what ``code`` does (no filename in it): name, first line, bytecode, names, consts."""
    code_type = type(fingerprint.__code__)

    def norm(value):
        kind = type(value)
        if kind is code_type:
            return "code:" + fingerprint(value)
        if kind is tuple:
            return tuple(norm(v) for v in value)
        if kind is frozenset:
            return ("frozenset", tuple(sorted(repr(norm(v)) for v in value)))
        return (kind.__name__, repr(value))

    body = (code.co_name, code.co_firstlineno, code.co_argcount, code.co_code, code.co_names,
            code.co_varnames, code.co_freevars, code.co_cellvars, tuple(norm(c) for c in code.co_consts))
    return hashlib.sha256(repr(body).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _codes(code):
    yield code
    for const in code.co_consts:
        if type(const) is type(code):
            for inner in _codes(const):
                yield inner


class _PassHookConfig(object):
    def getini(self, name):
        return name == "enable_assertion_pass_hook"


def _variants(source, path):
    yield compile(source, path, "exec", dont_inherit=True)
    try:
        from _pytest.assertion.rewrite import rewrite_asserts
    except ImportError:
        return
    for config in (None, _PassHookConfig()):
        tree = ast.parse(source, filename=path)
        try:
            rewrite_asserts(tree, source, path, config)
        except TypeError:  # an older pytest: rewrite_asserts(mod, module_path=None, config=None)
            rewrite_asserts(tree, path, config)
        yield compile(tree, path, "exec", dont_inherit=True)


def _mentions_mark(nodes):
    for node in nodes:
        for sub in ast.walk(node):
            word = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) else None
            if word in _MARK_WORDS:
                return True
    return False


def _marked(tree):
    found = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets) and _mentions_mark([node]):
                found.add("*")
        elif isinstance(node, (ast.Expr, ast.If, ast.Try)) and _mentions_mark([node]):
            found.add("*")  # a module-level skip / importorskip

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                name = prefix + node.name
                class_mark = [n for n in node.body if isinstance(n, ast.Assign)
                              and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)]
                if _mentions_mark(node.decorator_list) or _mentions_mark(class_mark):
                    found.add(name)
                visit(node.body, name + "::")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _mentions_mark(node.decorator_list) or _mentions_mark(node.body):
                    found.add(prefix + node.name)

    visit(tree.body, "")
    return sorted(found)


def main(argv):
    repo, out, tests = argv[0], argv[1], argv[2:]
    try:
        import pytest  # noqa: F401
    except ImportError as exc:
        sys.stderr.write("pytest cannot be imported: %s\n" % exc)
        return 3
    result = {"files": {}, "marked": {}, "errors": {}}
    for rel in tests:
        path = os.path.join(repo, rel)
        try:
            with open(path, "rb") as fh:
                source = fh.read()
            entries = {}
            for code in _variants(source, path):
                for inner in _codes(code):
                    entries[fingerprint(inner)] = inner.co_name
            result["files"][rel] = entries
            result["marked"][rel] = _marked(ast.parse(source, filename=path))
        except (IOError, OSError, SyntaxError, ValueError) as exc:  # the file's tests fail to collect
            result["errors"][rel] = "%s: %s" % (type(exc).__name__, exc)
    with open(out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
