"""The audit hook of swe-srl's pytest launcher (runs INSIDE the grading container; imported once by
``run_pytest.py`` before any code of the repository, then deleted with it).

Everything the verdict rests on lives in the closure of :func:`install`'s hook: the channel key,
the channel descriptor, the snapshot of pytest's internals, the reference fingerprints. The
hook is reachable only through the interpreter's hook list, which Python code cannot read; gc
and frame introspection, the other ways to a closure, are denied to the repository's code.
The hook never looks a name up in a module or in builtins at run time (the code under test can
rebind those): every function it calls was captured into the closure at install time.

One file by design (~530 lines, over the project's ~400): it is copied into the container beside
run_pytest.py, imports nothing of swe-srl's, and what it keeps must sit in one closure; split in two,
the halves would meet through a module attribute the code under test could rebind.
"""

import os
import sys

_WATCHED = frozenset({
    "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.addaudithook", "object.__getattr__",
    "object.__setattr__", "code.__new__", "compile", "open", "os.rename", "os.link", "os.symlink", "os.utime",
    "marshal.loads",
    "sys.monitoring.register_callback",
})
# Frame attributes whose reads the interpreter audits (f_back, f_globals, f_locals it does not):
# reading f_code is how inspect.stack() and friends walk; denied on the runner's frames.
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code"})
# Standard-library functions that read frames for their own use and hand none out.
_CONSUMERS = {"typing.py": {"_caller"}, "collections/__init__.py": {"namedtuple"},
              "logging/__init__.py": {"findCaller"}, "enum.py": {"_create_", "__call__"},
              "traceback.py": {"extract_stack", "format_stack", "print_stack", "_extract_from_extended_frame_gen",
                               "extract", "format_exc", "print_exc", "format_exception", "print_exception"},
              "unittest/result.py": {"_is_relevant_tb_level", "_clean_tracebacks", "_exc_info_to_string"},
              "doctest.py": {"_normalize_module"}, "inspect.py": {"getgeneratorstate", "getcoroutinestate"},
              "asyncio/format_helpers.py": {"extract_stack"}, "asyncio/coroutines.py": {"_format_coroutine"},
              "warnings.py": {"_next_external_frame", "warn"}}
_WATCHED_HOOKS = ("pytest_runtest", "pytest_pyfunc", "pytest_report", "pytest_pycollect", "pytest_collect",
                  "pytest_make_collect", "pytest_itemcollected", "pytest_deselected", "pytest_session",
                  "pytest_generate_tests", "pytest_make_parametrize", "pytest_fixture", "pytest_assertrepr")
_OVERRIDES = ("runtest", "ihook", "setup", "teardown", "_getobj", "repr_failure", "reportinfo")
# Events that hand out a frame: denied to the code under test when the frame is the runner's
# (or whenever the hook itself is running: code it calls into must not see the hook's frames).
_FRAME_EVENTS = frozenset({"sys._getframe", "sys._current_frames", "sys._current_exceptions"})


def install(key, fd, cfg, reference, module_code, main_code, guard_cls):  # noqa: C901 - the hook's state must live in this one closure (module docstring)
    """Install the hook; from here on the channel is written by it alone. Returns None, or on a
    Python without audit hooks (< 3.8) the hook itself, which the plugin then calls directly
    (records are still checked for their calling stack; nothing is denied)."""
    STDLIB, LIB, OWN, TEST, UNTRUSTED = "stdlib", "lib", "own", "test", "untrusted"
    WATCHED, FRAME_ATTRS, WATCHED_HOOKS, OVERRIDES = _WATCHED, _FRAME_ATTRS, _WATCHED_HOOKS, _OVERRIDES
    FRAME_EVENTS, modules, O_WRITE = _FRAME_EVENTS, sys.modules, os.O_WRONLY | os.O_RDWR | os.O_CREAT
    import _thread
    import hashlib
    import stat
    import time
    import types
    _len, _isinstance, _type, _id, _repr, _sorted, _tuple = len, isinstance, type, id, repr, sorted, tuple
    _str, _frozenset, _getattr, _vars, _int, _bytes, _dir = str, frozenset, getattr, vars, int, bytes, dir
    _BaseException, _RuntimeError, _OSError, _open, _hasattr = BaseException, RuntimeError, OSError, open, hasattr
    _bool, _dict, _property, _staticmethod, _classmethod = bool, dict, property, staticmethod, classmethod
    getframe, get_ident, osstat, write, close = sys._getframe, _thread.get_ident, os.stat, os.write, os.close
    sha256, sha1, S_ISREG, start = hashlib.sha256, hashlib.sha1, stat.S_ISREG, time.time()
    FunctionType, MethodType, ModuleType = types.FunctionType, types.MethodType, types.ModuleType
    code_type, str_copy, frame_type = _type(install.__code__), _str.__str__, _type(sys._getframe())
    escapes = {i: "\\u%04x" % i for i in range(32)}
    escapes.update({ord('"'): '\\"', ord("\\"): "\\\\"})
    block = key + b"\0" * (64 - _len(key))
    ipad, opad = _bytes(b ^ 0x36 for b in block), _bytes(b ^ 0x5C for b in block)
    root = os.path.realpath(os.getcwd())
    root_slash = root + "/"
    tests = _frozenset(os.path.join(root, p) for p in cfg.get("tests", ()))
    touched = _frozenset(os.path.join(root, p) for p in cfg.get("touched", ()))
    reference_fps = _frozenset(fp for entries in reference.get("files", {}).values() for fp in entries)
    base = {}
    try:
        with _open(cfg["tracked"]) as fh:
            for line in fh:
                meta, _, path = line.rstrip("\n").partition("\t")
                parts = meta.split()
                if _len(parts) == 3:
                    base[root_slash + path] = parts[2]
    except (IOError, OSError, KeyError):
        pass
    std_dir = os.path.dirname(os.__file__) + "/"
    libs = []
    for entry in sys.path + [std_dir + "site-packages", std_dir + "dist-packages"]:
        if entry and entry.rstrip("/").endswith(("site-packages", "dist-packages")):
            for p in (entry, os.path.realpath(entry)):
                if not (p + "/").startswith(root_slash) and p + "/" not in libs:
                    libs.append(p.rstrip("/") + "/")
    libs = _tuple(libs)
    std_dirs = _tuple({std_dir, os.path.realpath(std_dir) + "/"})
    consumers = _tuple((suffix, _frozenset(names)) for suffix, names in _CONSUMERS.items())

    own = {}

    def collect(code):
        own[_id(code)] = code
        for const in code.co_consts:
            if _type(const) is code_type:
                collect(const)

    for code in (module_code, main_code, install.__code__):
        collect(code)
    for value in _vars(guard_cls).values():
        if _isinstance(value, FunctionType):
            collect(value.__code__)
    state = {"lines": 0, "denied": None, "tampered": None, "pm": None, "snapshot": None, "impls": {},
             "calls": {}, "witness": {}, "closed": False, "user": "root", "runner_in_repo": False,
             "report_class": None, "doctest_class": None}
    file_kind, code_kind, blob_ok, fp_cache, inside, busy = {}, {}, {}, {}, set(), set()

    def fingerprint(code):
        hit = fp_cache.get(_id(code))
        if hit is not None and hit[0] is code:
            return hit[1]

        def norm(value):
            kind = _type(value)
            if kind is code_type:
                return "code:" + fingerprint(value)
            if kind is _tuple:
                return _tuple(norm(v) for v in value)
            if kind is _frozenset:
                return ("frozenset", _tuple(_sorted(_repr(norm(v)) for v in value)))
            return (kind.__name__, _repr(value))

        body = (code.co_name, code.co_firstlineno, code.co_argcount, code.co_code, code.co_names,
                code.co_varnames, code.co_freevars, code.co_cellvars, _tuple(norm(c) for c in code.co_consts))
        fp = sha256(_repr(body).encode("utf-8", "surrogatepass")).hexdigest()[:32]
        fp_cache[_id(code)] = (code, fp)
        return fp

    def classify_file(name):
        if name.startswith("<frozen "):
            return STDLIB
        if not name.startswith("/") or "/../" in name or "/./" in name:
            return UNTRUSTED
        if name in tests:
            return TEST
        if name.startswith(root_slash):
            return UNTRUSTED
        try:
            st = osstat(name)
        except _OSError:
            return UNTRUSTED
        if not S_ISREG(st.st_mode) or st.st_mtime > start:
            return UNTRUSTED  # written while the tests ran
        for prefix in libs:
            if name.startswith(prefix):
                return LIB
        for prefix in std_dirs:
            if name.startswith(prefix):
                return STDLIB
        return UNTRUSTED

    def kind_of(code):
        if _id(code) in own and own[_id(code)] is code:
            return OWN
        name = code.co_filename
        kind = file_kind.get(name)
        if kind is None:
            kind = file_kind[name] = classify_file(name)
        if kind is TEST:  # the task's test file: trusted only as the code compiled outside
            hit = code_kind.get(_id(code))
            if hit is None or hit[0] is not code:
                hit = code_kind[_id(code)] = (code, TEST if fingerprint(code) in reference_fps else UNTRUSTED)
            return hit[1]
        return kind

    def consumer(code):
        name = code.co_filename
        for suffix, names in consumers:
            if code.co_name in names and name.endswith(suffix):
                return True
        return False

    def attributed(frame):
        """Who is responsible for an operation: the nearest frame not in the standard library
        (a standard function that only reads frames for itself makes it the runner's)."""
        while frame is not None:
            code = frame.f_code
            kind = kind_of(code)
            if kind is STDLIB:
                if consumer(code):
                    return LIB
                frame = frame.f_back
                continue
            return kind
        return UNTRUSTED

    def where(frame):
        while frame is not None:
            if kind_of(frame.f_code) not in (STDLIB, OWN):
                return "%s:%d" % (frame.f_code.co_filename, frame.f_lineno)
            frame = frame.f_back
        return "a thread of the standard library"

    def deny(what, frame):
        text = "%s from %s" % (what, where(frame))
        if state["denied"] is None:
            state["denied"] = text
        raise _RuntimeError("swe-srl grading: %s is not allowed to the code under test" % text)

    def tamper(text):
        if state["tampered"] is None:
            state["tampered"] = text

    def encode(value):
        kind = _type(value)
        if value is None or kind is _bool:
            return "null" if value is None else ("true" if value else "false")
        if kind is _int:
            return _repr(value)
        if kind is _dict:
            return "{" + ",".join(encode(k) + ":" + encode(v) for k, v in value.items()) + "}"
        return '"' + str_copy(value).translate(escapes) + '"'

    def emit(record):
        if state["closed"]:
            return
        body = encode(record).encode("utf-8", "replace")
        mac = sha256(opad + sha256(ipad + body).digest()).hexdigest()
        write(fd, mac.encode("ascii") + b" " + body + b"\n")
        state["lines"] += 1

    def genuine_path(frame):
        """The stack that raised a swe-srl event: this file's plugin called by the runner alone."""
        if get_ident() != main_ident or kind_of(frame.f_code) is not OWN:
            return False
        frame = frame.f_back
        while frame is not None:  # a base-commit conftest may drive the protocol itself
            code = frame.f_code
            if kind_of(code) not in (STDLIB, LIB, OWN, TEST) and (
                    not code.co_filename.startswith(root_slash) or base_file(code.co_filename)):
                return False
            frame = frame.f_back
        return True

    def snapshot():
        found = {}
        for name, module in _sorted(modules.items()):
            if module is None or name.split(".")[0] not in ("_pytest", "pluggy", "pytest"):
                continue
            for attr, value in _sorted(_vars(module).items()):
                if _isinstance(value, (FunctionType, _type)):
                    found[(name, attr)] = (value, _getattr(value, "__code__", None))
                if _isinstance(value, _type) and _getattr(value, "__module__", None) == name:
                    for cattr, cvalue in _vars(value).items():
                        if _isinstance(cvalue, (FunctionType, _property, _staticmethod, _classmethod)):
                            found[(name, attr, cattr)] = (cvalue, _getattr(cvalue, "__code__", None))
        return found

    def runner_code(value):
        """Whether ``value`` (a replacement) is code of the installed runner or its plugins
        (pytest's legacypath plugin, say, patches Config at configure time)."""
        if _isinstance(value, (_staticmethod, _classmethod)):
            value = value.__func__
        if _isinstance(value, _property):
            value = value.fget
        if _type(value) is _type and _getattr(value, "__module__", "").split(".")[0] in ("_pytest", "pluggy", "pytest"):
            return True
        return _type(value) is FunctionType and kind_of(value.__code__) in (LIB, STDLIB)

    def check_internals():
        for where_, (value, code) in state["snapshot"].items():
            module = modules.get(where_[0])
            current = _vars(module).get(where_[1]) if module is not None else None
            if _len(where_) == 3:
                current = _vars(current).get(where_[2]) if _isinstance(current, _type) else None
            if (current is not value or _getattr(current, "__code__", None) is not code) and not runner_code(current):
                return "%s replaced" % ".".join(where_)
        return None

    def base_file(name):
        """Why code from ``name`` (a file of the repository) is not the base commit's own,
        unchanged since the tests started, or None."""
        if name in touched:
            return "from a file the patch changed"
        if name not in base:
            return "not a file of the base commit"
        try:
            st = osstat(name)
        except _OSError:
            return "not a file of the base commit"
        if st.st_mtime > start:
            return "a file changed while the tests ran"
        key_ = (name, st.st_mtime_ns, st.st_size)
        if key_ not in blob_ok:
            try:
                with _open(name, "rb") as fh:
                    data = fh.read()
                same = base.get(name) == sha1(b"blob %d\0" % _len(data) + data).hexdigest()
            except _OSError:
                same = False
            blob_ok[key_] = None if same else "not a file of the base commit"
        return blob_ok[key_]

    def trusted_impl(function):
        if _type(function) is MethodType:
            function = function.__func__
        if _type(function) is not FunctionType:
            return "is not a plain function"
        code = function.__code__
        if kind_of(code) in (LIB, OWN, STDLIB, TEST):
            return None
        return base_file(code.co_filename)

    def check_hooks():
        pm = state["pm"]
        if pm is None:
            return "the runner's plugin manager was never seen"
        hooks = pm.hook
        for name in _dir(hooks):
            if not name.startswith(WATCHED_HOOKS):
                continue
            for impl in _getattr(_getattr(hooks, name, None), "get_hookimpls", lambda: ())():
                seen = state["impls"].get(_id(impl))
                function = impl.function
                if seen is not None and seen[0] is impl:
                    if function is not seen[1]:
                        return "hook %s of %s replaced" % (name, impl.plugin_name)
                    continue
                problem = trusted_impl(function)
                if problem:
                    code = _getattr(_getattr(function, "__func__", function), "__code__", None)
                    return "hook %s in %s, %s" % (name, code.co_filename if code else _repr(function), problem)
                state["impls"][_id(impl)] = (impl, function)
        return None

    def check_item(item):
        cls = _type(item)
        for klass in cls.__mro__[:-1]:
            for attr, value in _vars(klass).items():
                if _isinstance(value, (FunctionType, _property)):
                    function = value.fget if _isinstance(value, _property) else value
                    if function is not None and trusted_impl(function):
                        return "test item class %s defines %s outside the runner" % (cls.__name__, attr)
        overridden = [a for a in OVERRIDES if a in _vars(item)]
        return "test item %s overrides %s" % (item.nodeid, overridden[0]) if overridden else None

    def test_code(item):
        if state["doctest_class"] is not None and _type(item) is state["doctest_class"]:
            return "doctest"
        tid = get_ident()
        inside.discard(tid)  # resolving the test object may run the code under test: watch it
        try:
            function = _getattr(item, "obj", None)
        finally:
            inside.add(tid)
        for _ in range(50):
            if _type(function) is MethodType:
                function = function.__func__
            if _type(function) is not FunctionType:
                return "not-a-function"
            inner = _vars(function).get("__wrapped__")
            if inner is None:
                return fingerprint(function.__code__)
            if kind_of(function.__code__) not in (LIB, STDLIB, TEST):
                return "wrapper:" + fingerprint(function.__code__)
            function = inner
        return "not-a-function"

    def check_all():
        if state["runner_in_repo"]:
            return
        problem = check_internals() or check_hooks()
        if problem:
            tamper(problem)

    def on_event(event, args, frame):
        if event == "swe-srl.ready":
            if kind_of(frame.f_code) is OWN and state["snapshot"] is None:
                state["user"] = str_copy(args[0])
                state["snapshot"] = snapshot()
                reports = modules.get("_pytest.reports")
                doctest = modules.get("_pytest.doctest")
                state["report_class"] = _getattr(reports, "TestReport", None)
                state["doctest_class"] = _getattr(doctest, "DoctestItem", None)
                pytest_dir = os.path.dirname(sys.modules["pytest"].__file__)
                state["runner_in_repo"] = (pytest_dir + "/").startswith(root_slash)
            return
        if state["runner_in_repo"]:  # pytest's own repository: its runner is the code under test
            genuine = get_ident() == main_ident
        else:
            genuine = genuine_path(frame)
        if not genuine:
            tamper("the runner's reporting was called from %s" % where(frame))
            return
        if event == "swe-srl.configure":
            if state["pm"] is None:
                state["pm"] = args[0].pluginmanager
                check_hooks()
        elif event == "swe-srl.call":
            item = args[0]
            problem = None if state["runner_in_repo"] else check_item(item)
            if problem:
                tamper(problem)
            state["calls"][item.nodeid] = test_code(item)
        elif event == "swe-srl.called":
            item, ok = args
            before = state["calls"].get(item.nodeid)
            state["witness"][item.nodeid] = bool(ok) and before is not None and test_code(item) == before
            check_all()  # what makes and carries the report comes next: it must be the runner's own
        elif event == "swe-srl.report":
            report = args[0]
            when = str_copy(_getattr(report, "when", None) or "collect")
            outcome = str_copy(report.outcome)
            if outcome not in ("passed", "failed", "skipped"):
                outcome = "failed"
            record = {"nodeid": str_copy(report.nodeid), "when": when, "outcome": outcome,
                      "xfail": "wasxfail" in _vars(report)}
            if when == "call":
                record["code"] = state["calls"].pop(record["nodeid"], None)
                record["ran"] = state["witness"].pop(record["nodeid"], None)
            emit(record)
        elif event == "swe-srl.final":
            check_all()
            emit({"final": True, "exitstatus": _int(args[1]), "lines": state["lines"],
                  "tampered": state["tampered"], "denied": state["denied"], "user": state["user"],
                  "hardened": hardened, "runner_in_repo": state["runner_in_repo"]})
            state["closed"] = True
            close(fd)

    def runner_frame(value):
        """Whether ``value`` (a frame, or an object holding one) is a frame of the runner."""
        frame = value
        for attr in ("tb_frame", "gi_frame", "cr_frame", "ag_frame"):
            if _type(frame) is frame_type:
                break
            frame = _getattr(frame, attr, frame) if _type(frame) is not frame_type else frame
        if frame is None:
            return False
        if _type(frame) is not frame_type:
            return True  # _current_frames and the like: every thread's frames
        return kind_of(frame.f_code) in (LIB, OWN)

    def watched(event, args, frame):  # noqa: C901 - the audit hook: one dispatch over audited events, calling out to nothing
        kind = None
        if event == "object.__getattr__":
            if args[1] not in FRAME_ATTRS:
                return
            if get_ident() not in busy and not runner_frame(args[0]):
                return  # a frame of the code under test itself (tracebacks, generators)
        elif event in FRAME_EVENTS:
            if get_ident() not in busy and event == "sys._getframe" and not runner_frame(args[0]):
                return  # the caller's own frame (libraries that look up their caller's module)
        elif event == "object.__setattr__":
            name, target = args[1], args[0]
            if name == "__class__":
                if _isinstance(target, ModuleType):
                    path = _vars(target).get("__file__") or ""
                    mod = _vars(target).get("__name__") or ""
                    if path not in tests and mod.split(".")[0] not in ("_pytest", "pytest", "pluggy"):
                        return
                elif _type(target).__module__.split(".")[0] not in ("_pytest", "pytest", "pluggy"):
                    return
            elif name != "__code__":
                return
        elif event in ("compile", "code.__new__"):
            name = args[1]
            if _type(name) is not _str or not name.startswith("/"):
                return
            try:
                if not S_ISREG(osstat(name).st_mode):
                    return
            except _OSError:
                return
            kind = attributed(frame)
            if kind in (UNTRUSTED,) and event == "compile" and _type(args[0]) in (_str, _bytes):
                with _open(name, "rb") as fh:
                    data = fh.read()
                if (args[0] if _type(args[0]) is _bytes else args[0].encode("utf-8")) == data:
                    return
        elif event == "open":
            path, mode, flags = (args + (None, None, None))[:3]
            path = path if _type(path) is _str else ""
            writes = (_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
                _type(flags) is _int and flags & O_WRITE)
            if not ((path.startswith("/proc/") and path.endswith(("/mem", "/environ")))
                    or (writes and path.endswith((".pyc", ".pth")))):
                return
        elif event == "marshal.loads":  # code objects with any file name, built from bytes
            caller = frame.f_back if frame.f_code.co_name == "_compile_bytecode" else None
            source = None
            if caller is not None and caller.f_code.co_name == "get_code":
                source = caller.f_locals.get("source_path")
            if _type(source) is _str and classify_file(source) in (STDLIB, LIB):
                return  # the import system loading an installed module's cached bytecode
        elif event == "os.utime":  # back-dating a file rewritten at run time
            if not (_type(args[0]) is _str and args[0].endswith(".py")):
                return
        elif event in ("os.rename", "os.link", "os.symlink"):
            dst = args[1] if _len(args) > 1 else None
            if not (_type(dst) is _str and dst.endswith((".pyc", ".pth"))):
                return
        if kind is None:
            kind = attributed(frame)
        if kind in (STDLIB, LIB, OWN, TEST) or state["runner_in_repo"]:
            return
        what = {"object.__getattr__": "%s of a runner frame", "object.__setattr__": "setting %s"}.get(event)
        deny(what % args[1] if what else event, frame)

    def hook(event, args):
        event = str_copy(event)
        if event not in WATCHED and not event.startswith(("swe-srl.", "ctypes.")):
            return
        tid = get_ident()
        if tid in inside:  # raised by the hook's own reads (frames, code objects, files)
            return
        inside.add(tid)
        try:
            frame = getframe(1)
            if event.startswith("swe-srl."):
                busy.add(tid)
                try:
                    on_event(event, args, frame)
                except _BaseException as exc:
                    tamper("the runner's reporting failed: %s" % _type(exc).__name__)
                finally:
                    busy.discard(tid)
            else:
                watched(event, args, frame)
        finally:
            inside.discard(tid)

    main_ident, hardened = get_ident(), _hasattr(sys, "addaudithook")
    if not _hasattr(sys, "addaudithook"):
        return hook
    sys.addaudithook(hook)
    return None
