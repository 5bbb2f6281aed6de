"""The expert: one realistic bug-fix session on a task, built action by action.

explore (ls, find, grep, editor view of the tree) -> read (cat, sed -n, editor view) ->
reproduce (a script made with the editor or a heredoc, or ``python -c``) -> sometimes the
tests first -> edit (editor str_replace or insert, or ``sed -i``, sometimes checked) -> re-run
the reproduction -> sometimes a regression test -> remove the script -> tests -> submit.
Which tools, in which order, how many steps: drawn per task, 5-12 steps in all.
"""

from __future__ import annotations

import random

from .sandbox import (WORKDIR, cat_n, editor_insert, editor_str_replace, evaluate, git_diff, git_status_short,
                      grep, ls, run_script, run_tests, sed_edit, sed_pattern, sed_print, sed_replacement, tree_view)
from .tasks import Task, assertion, fixed_files, import_line, mentions

MIN_STEPS, MAX_STEPS = 5, 12


class Session:
    """One expert trajectory, built action by action against the in-memory repository."""

    def __init__(self, task: Task, rng: random.Random) -> None:
        self.task, self.rng, self.bug = task, rng, task.bug
        self.files = dict(task.files)
        self.steps: list = []
        self.py = rng.choice(("python", "python3", "python"))
        self.func, self.mod, self.pkg = task.bug.func, task.mod_path, task.names["pkg"]
        lines = task.files[self.mod].split("\n")
        self.def_line = next(i for i, line in enumerate(lines, 1) if line.startswith(f"def {self.func}("))
        end = self.def_line
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
            end += 1
        while not lines[end - 1].strip():
            end -= 1
        self.func_end = end
        self.bug_line = task.files[self.mod].split(self.bug.old)[0].count("\n") + 1
        self.knows_line = False
        self.read_tests = False
        self.script = None  # (command that runs the reproduction, source, filename)
        self.note = ""  # what the last observation taught, opens the next thought

    # -- recording
    def say(self, *options: str, **extra) -> str:
        fields = {"func": self.func, "mod": self.mod, "pkg": self.pkg, "tests": self.task.test_path,
                  "line": self.def_line} | extra
        text = self.rng.choice(options).format(**fields)
        if self.note:
            text, self.note = f"{self.note} {text}", ""
        return text

    def add(self, tool: str, arguments: dict, observation: str, thought: str, exit_code=0) -> None:
        self.steps.append({"schema_version": 1,
                           "action": {"schema_version": 1, "tool": tool, "arguments": arguments, "raw": ""},
                           "thought": thought, "observation": observation, "exit_code": exit_code,
                           "timed_out": False})

    def bash(self, command: str, observation: str, thought: str, exit_code=0) -> None:
        self.add("bash", {"command": f"cd {WORKDIR} && {command}"}, observation, thought, exit_code)

    def editor(self, arguments: dict, observation: str, thought: str) -> None:
        self.add("str_replace_editor", arguments, observation, thought, 0)

    # -- phases
    def explore(self) -> None:
        rng, files = self.rng, self.files
        overview = rng.choice((None, None, "ls", "find", "tree", "ls_pkg"))
        locate = rng.choice(("grep_def", "grep_def", "grep_use", "init"))
        if overview is None and locate == "init":
            locate = "grep_def"
        first = self.say("The issue is about `{func}`.", "The report concerns `{func}` in {pkg}.",
                         "The issue reports a problem in `{func}`.", "")
        if overview == "ls":
            self.bash("ls", ls(files), (first + " " + self.say(
                "Let me look at the repository layout first.", "Start with the top level of the repository."))
                .strip())
        elif overview == "ls_pkg":
            out = "\n".join(f"{d}:\n{ls(files, d)}" for d in sorted((self.pkg, "tests")))  # ls sorts them
            self.bash(f"ls {self.pkg} tests", out, (first + " " + self.say(
                "What modules and tests does the package have?", "Let me see the package and its tests.")).strip())
        elif overview == "find":
            out = "".join(f"./{p}\n" for p in sorted(files) if p.endswith(".py"))
            self.bash(rng.choice(("find . -name '*.py' | sort", "find . -type f -name '*.py' | sort")), out,
                      (first + " " + self.say("Let me list the Python files.", "Which Python files are there?"))
                      .strip())
        elif overview == "tree":
            self.editor({"command": "view", "path": WORKDIR}, tree_view(files), (first + " " + self.say(
                "Let me get an overview of the repository.", "First an overview of the files.")).strip())
        lead = "" if overview else first + " "
        if locate == "init":
            init = f"{self.pkg}/__init__.py"
            self.bash(f"cat {init}", files[init], self.say(
                "The package's __init__ should tell me which module `{func}` comes from.",
                "Let me check where `{func}` is imported from in the package."))
            self.note = self.rng.choice(("It comes from {mod}.", "So `{func}` lives in {mod}.")).format(
                mod=self.mod, func=self.func)
            return
        if locate == "grep_def":
            root = rng.choice((".", f"{self.pkg}/", self.pkg))
            self.bash(f'grep -rn "def {self.func}" {root}', grep(files, f"def {self.func}", [root]),
                      (lead + self.say("Let me find where `{func}` is defined.", "First I need to locate `{func}`.",
                                       "Searching for the definition of `{func}`.")).strip())
        else:
            if rng.random() < 0.5:
                command, out = (f'grep -rn "{self.func}" --include=*.py .',
                                grep(files, self.func, ["."], py_only=True))
            else:
                command, out = f'grep -rn "{self.func}" {self.pkg} tests', grep(files, self.func, [self.pkg, "tests"])
            self.bash(command, out, (lead + self.say("Let me see where `{func}` is defined and used.",
                                                     "Where is `{func}` defined, and what tests use it?")).strip())
        self.knows_line = True

    def read(self) -> None:
        rng, text = self.rng, self.files[self.mod]
        n_lines = len(text.split("\n"))
        how = rng.choice(("cat", "view", "sed", "view_range", "sed") if self.knows_line else ("cat", "view"))
        intro = (self.say("It is defined in {mod} at line {line}; let me read it.",
                          "`{func}` is at line {line} of {mod}.", "Found it in {mod}, line {line}. Reading it.")
                 if self.knows_line else self.say("Let me read {mod}.", "Reading {mod}.",
                                                  "Let me look at the module that defines `{func}`."))
        start = max(1, self.def_line - rng.randint(0, 4))
        stop = min(n_lines - 1, self.func_end + rng.randint(0, 6))
        if how == "cat":
            self.bash(f"cat {self.mod}", text, intro)
        elif how == "view":
            self.editor({"command": "view", "path": f"{WORKDIR}/{self.mod}"}, cat_n(text, f"{WORKDIR}/{self.mod}"),
                        intro)
        elif how == "sed":
            self.bash(f"sed -n '{start},{stop}p' {self.mod}", sed_print(text, start, stop), intro)
        else:
            chosen = "\n".join(text.split("\n")[start - 1:stop])
            self.editor({"command": "view", "path": f"{WORKDIR}/{self.mod}", "view_range": [start, stop]},
                        cat_n(chosen, f"{WORKDIR}/{self.mod}", start), intro)
        self.note = self.bug.diagnosis
        if rng.random() < 0.3:
            test_text = self.files[self.task.test_path]
            thought = self.say("Let me check what the existing tests cover.", "What do the tests of this module check?")
            if rng.random() < 0.5:
                self.bash(f"cat {self.task.test_path}", test_text, thought)
            else:
                self.editor({"command": "view", "path": f"{WORKDIR}/{self.task.test_path}"},
                            cat_n(test_text, f"{WORKDIR}/{self.task.test_path}"), thought)
            self.read_tests = True
            self.note = rng.choice(("No test covers this case.", "The tests do not exercise this case."))

    def reproduce(self) -> None:
        rng, bug = self.rng, self.bug
        calls = [expr for _, expr in bug.bug_calls]
        if bug.ok_calls and rng.random() < 0.5:
            calls.append(rng.choice(bug.ok_calls)[1])
        header = import_line(self.task, bug.exports, from_package=rng.random() < 0.5)
        outcomes = [evaluate(self.files, header, expr) for expr in calls]
        calls = [c for c, o in zip(calls, outcomes) if o[0] == "value"] + [
            c for c, o in zip(calls, outcomes) if o[0] != "value"]  # a crash ends the script: last
        prints = [f"print(repr({c}))" if isinstance(evaluate(self.files, header, c)[1], str) else f"print({c})"
                  for c in calls]
        used = [n for n in bug.exports if any(mentions(n, c) for c in calls)]
        header = header.split(" import ")[0] + " import " + ", ".join(used) + "\n"
        source = header + "\n" + "\n".join(prints) + "\n"
        thought = self.say("Let me reproduce it first.", "Let me confirm this with a small script.",
                           "A quick reproduction to be sure:", "Let me reproduce the problem from the issue.")
        mode = rng.choice(("create", "heredoc", "inline", "inline", "create"))
        name = rng.choice(("reproduce.py", "repro.py", "reproduce_issue.py"))
        if mode == "create":
            self.files[name] = source
            self.editor({"command": "create", "path": f"{WORKDIR}/{name}", "file_text": source},
                        f"File created successfully at: {WORKDIR}/{name}\n", thought)
            self.script = (f"{self.py} {name}", source, f"{WORKDIR}/{name}")
            self.run_script(self.rng.choice(("Run it.", "Running the script.", "Let me run it.")))
        elif mode == "heredoc":
            self.files[name] = source
            self.script = (f"{self.py} {name}", source, f"{WORKDIR}/{name}")
            out, code = run_script(self.files, source, f"{WORKDIR}/{name}")
            self.bash(f"cat > {name} << 'EOF'\n{source}EOF\n{self.py} {name}", out, thought, code)
            self.note_outcome(code)
        else:
            code_text = source.replace("\n\n", "\n").rstrip("\n")
            if len(prints) <= 2 and rng.random() < 0.5:
                code_text = code_text.replace("\n", "; ")
            self.script = (f'{self.py} -c "{code_text}"', code_text, "<string>")
            self.run_script(thought)

    def run_script(self, thought: str) -> None:
        command, source, filename = self.script
        out, code = run_script(self.files, source, filename)
        self.bash(command, out, thought, code)
        self.note_outcome(code)

    def note_outcome(self, code: int) -> None:
        self.note = self.rng.choice(("Reproduced.", "Confirmed.", "That is the bug from the issue.",
                                     "The reproduction shows the problem.")) if code == 0 else self.rng.choice(
            ("It crashes as reported.", "Reproduced: the call raises.", "Confirmed, the exception from the issue."))

    def run_tests_step(self, thought: str, prefix: str = "", suffix: str = "") -> None:
        rng, task = self.rng, self.task
        all_tests = sorted(p for p in self.files if p.startswith("tests/test_") and p.endswith(".py"))
        target = rng.choice(("tests", task.test_path, "", "tests", "-k"))
        names = [n.lower() for n in ("tests", "testbed", *(p.split("/")[-1] for p in all_tests))]
        if target == "-k" and any(self.func.lower() in n for n in names):
            target = "tests"
        paths = [task.test_path] if target == task.test_path else all_tests
        results = run_tests(self.files, paths)
        if not all(ok for *_, ok in results):
            raise AssertionError(f"{task.task_id}: a test fails in the expert's run")
        deselected = 0
        if target == "-k":
            kept = [r for r in results if self.func.lower() in r[1].lower()]
            if not kept:
                target, kept = "tests", results
            deselected, results = len(results) - len(kept), kept
        args = {"": "", "-k": f" tests -k {self.func}"}.get(target, f" {target}")
        secs = rng.randint(1, 6 + len(results)) / 100
        summary = f"{len(results)} passed" + (f", {deselected} deselected" if deselected else "") + f" in {secs:.2f}s"
        out = ("." * len(results)).ljust(72) + " [100%]\n" + summary + "\n"
        command = f"{self.py} -m pytest -q{args}"
        if "git status --short" in suffix:
            out += git_status_short(self.task.files, self.files)
        self.bash(prefix + command + (" && " + suffix if suffix else ""), out, thought)

    def edit(self) -> None:
        rng, bug, text = self.rng, self.bug, self.files[self.mod]
        old_lines, new_lines = bug.old.split("\n"), bug.new.split("\n")
        changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
        ways = ["str_replace", "str_replace"]
        if len(old_lines) == len(new_lines) and len(changed) == 1 and "'" not in old_lines[changed[0]] + \
                new_lines[changed[0]]:
            ways.append("sed")
        if bug.new.endswith("\n" + bug.old):
            ways.append("insert")
        how = rng.choice(ways)
        thought = self.say("The fix is to {fix}.", "I'll {fix}.", "Fix: {fix}.", "So the change is to {fix}.",
                           fix=bug.fix_note)
        path = f"{WORKDIR}/{self.mod}"
        if how == "str_replace":
            old, new = bug.old, bug.new
            previous = text.split("\n")[self.bug_line - 2] if self.bug_line > 1 else ""
            if previous.strip() and rng.random() < 0.3 and text.count(previous + "\n" + old) == 1:
                old, new = previous + "\n" + old, previous + "\n" + new
            self.editor({"command": "str_replace", "path": path, "old_str": old, "new_str": new},
                        editor_str_replace(self.files, self.mod, old, new), thought)
        elif how == "insert":
            added = bug.new[:-len(bug.old) - 1]
            self.editor({"command": "insert", "path": path, "insert_line": self.bug_line - 1, "new_str": added},
                        editor_insert(self.files, self.mod, self.bug_line - 1, added), thought)
        else:
            i = changed[0]
            line_no = self.bug_line + i
            frag_old, frag_new = sed_edit(old_lines[i], new_lines[i])
            address = str(line_no) if text.count(frag_old) > 1 or rng.random() < 0.4 else ""
            lines = text.split("\n")
            lines[line_no - 1] = lines[line_no - 1].replace(frag_old, frag_new, 1)
            self.files[self.mod] = "\n".join(lines)
            self.bash(f"sed -i '{address}s/{sed_pattern(frag_old)}/{sed_replacement(frag_new)}/' {self.mod}", "",
                      thought)
            if rng.random() < 0.6:
                check = self.say("Let me check the change.", "Checking the edit:", "Did sed do the right thing?")
                if rng.random() < 0.5:
                    self.bash("git diff", git_diff(self.task.files, self.files), check)
                else:
                    a, b = max(1, line_no - 2), line_no + 2
                    self.bash(f"sed -n '{a},{b}p' {self.mod}", sed_print(self.files[self.mod], a, b), check)
        if self.files[self.mod] != fixed_files(self.task)[self.mod]:
            raise AssertionError(f"{self.task.task_id}: the {how} edit does not give the fix")

    def add_regression_test(self) -> bool:
        bug, rng = self.bug, self.rng
        label, expr = bug.bug_calls[0]
        path = self.task.test_path
        imported = self.files[path].split("\n")[0].split(" import ")[1].split(", ")
        if any(mentions(n, expr) and n not in imported for n in bug.exports):
            return False
        outcome, value = evaluate(self.files, import_line(self.task, bug.exports), expr)
        if outcome != "value":
            return False
        name = f"test_{self.func}_{label}"
        if f"def {name}(" in self.files[path]:
            name += "_regression"
        test = f"def {name}():\n" + assertion(expr, value)
        thought = self.say("Let me add a regression test for this case to {tests}.",
                           "I'll also add a test for the case from the issue.")
        if self.read_tests and rng.random() < 0.7:
            at = len(self.files[path].split("\n"))
            new = "\n\n" + test.rstrip("\n")
            self.editor({"command": "insert", "path": f"{WORKDIR}/{path}", "insert_line": at, "new_str": new},
                        editor_insert(self.files, path, at, new), thought)
        else:
            self.files[path] += "\n\n" + test
            self.bash(f"cat >> {path} << 'EOF'\n\n\n{test}EOF", "", thought)
        return True

    def build(self) -> None:
        rng = self.rng
        self.explore()
        self.read()
        if rng.random() < 0.9:
            self.reproduce()
        if rng.random() < 0.2:
            self.run_tests_step(self.say("Before changing anything, let me run the existing tests."))
            self.note = rng.choice(("The existing tests pass, so none of them covers this case.",
                                    "All green: the tests do not catch the bug."))
        self.edit()
        if self.script and rng.random() < 0.9:
            self.run_script(self.say("Re-running the reproduction.", "Now the script again.",
                                     "Let me run the reproduction again."))
            self.note = rng.choice(("Now the output is right.", "Fixed.", "That is the expected result now."))
        added = rng.random() < 0.35 and self.add_regression_test()
        thought = self.say("Now the test suite.", "Let me run the tests.",
                           "Run the tests to make sure nothing else broke.") + (
            " The new test should pass too." if added else "")
        leftover = next((p for p in self.files if p not in self.task.files), None)
        if leftover and rng.random() < 0.4:
            del self.files[leftover]
            self.bash(f"rm {leftover}", "", self.say("The reproduction script is not part of the fix; removing it."))
            self.run_tests_step(thought)
        elif leftover:
            del self.files[leftover]
            if rng.random() < 0.5:
                self.run_tests_step(thought + " And remove the reproduction script.", prefix=f"rm {leftover} && ")
            else:
                status = " && git status --short" if rng.random() < 0.5 else ""
                self.run_tests_step(thought + " Then remove the script.", suffix=f"rm {leftover}{status}")
        else:
            self.run_tests_step(thought)
        if rng.random() < 0.25:
            self.bash("git diff", git_diff(self.task.files, self.files),
                      self.say("Let me review the final diff.", "A last look at the diff."))
        self.add("submit", {}, "submitted", self.say(
            "The fix is in place and the tests pass. Submitting.", "Done: the bug is fixed and the tests pass.",
            "Everything passes; submitting the change."), 0)


def expert_session(task: Task, seed: int) -> Session:
    """The expert's finished session on ``task`` (its steps, and its files at the end)."""
    rng = random.Random(f"swe-srl-synthetic:{seed}:expert:{task.task_id}")
    for _ in range(100):
        session = Session(task, rng)
        session.build()
        if MIN_STEPS <= len(session.steps) <= MAX_STEPS:
            return session
    raise AssertionError(f"{task.task_id}: no session of {MIN_STEPS}-{MAX_STEPS} steps")
