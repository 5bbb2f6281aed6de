"""The bash lexer behind the leak rules: which simple commands a script runs."""

from __future__ import annotations

import pytest

from swe_srl.leaks.shell import commands, ipython_commands, lex, python_commands


def argvs(script: str) -> list[list[str]]:
    return [list(c.argv) for c in commands(script)]


@pytest.mark.parametrize("script, expected", [
    ("cd x && git log --all", [["cd", "x"], ["git", "log", "--all"]]),
    ("git log --all|head -3;echo 'a b'", [["git", "log", "--all"], ["head", "-3"], ["echo", "a b"]]),
    ("(cd /repo; git reflog) || true", [["cd", "/repo"], ["git", "reflog"], ["true"]]),
    ("a\nb c &\nd", [["a"], ["b", "c"], ["d"]]),
    ("git log \\\n  --all", [["git", "log", "--all"]]),
    ("ls 2>&1 >/dev/null; cat < in.txt", [["ls"], ["cat"]]),
    ("echo it''s \"x y\" a\\ b", [["echo", "its", "x y", "a b"]]),
    ("echo a#b # git log --all", [["echo", "a#b"]]),
    ("git log --format='%H %s' -3", [["git", "log", "--format=%H %s", "-3"]]),
    ("{ git stash; } && if true; then git diff; fi", [["git", "stash"], ["true"], ["git", "diff"]]),
    ("FOO=1 sudo -u me env A=2 timeout -s 9 10 nice -n 5 git fetch", [["git", "fetch"]]),
    ("git rev-list HEAD | xargs -n1 -I{} git show {}", [["git", "rev-list", "HEAD"], ["git", "show", "{}"]]),
    ("for c in a b; do git show $c; done", [["git", "show", "$c"]]),
    ("echo 'unbalanced quote", [["echo", "unbalanced quote"]]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_simple_commands(script, expected):
    assert argvs(script) == expected


@pytest.mark.parametrize("script", [
    'echo "$(git log --all)"',
    "echo `git log --all`",
    "x=$(cd /t && git log --all | head)",
    "bash -c 'cd /x && git log --all'",
    "sh -ec \"cd /t; git log --all\"",
    'eval "git log --all"',
    "bash <<'EOF'\ncd /testbed\ngit log --all\nEOF",
    "python -c \"import os; os.system('git log --all')\"",
    "python3 - <<EOF\nimport subprocess\nsubprocess.run(['git', 'log', '--all'])\nEOF",
    "python -c \"import subprocess as s; s.check_output('git log --all', shell=True)\"",
], ids=["dollar-paren", "backticks", "assignment", "bash-c", "sh-ec", "eval", "bash-heredoc", "python-c",
        "python-heredoc-list", "python-shell-true"])
def test_nested_commands_are_seen(script):
    assert ["git", "log", "--all"] in argvs(script)


def test_heredoc_written_to_a_file_is_not_run():
    script = "cat > t.py <<'EOF'\nimport os\nos.system('git log --all')\nEOF\npython t.py"
    assert argvs(script) == [["cat"], ["python", "t.py"]]
    [cat, _] = commands(script)
    assert cat.stdin == "import os\nos.system('git log --all')"


def test_python_m_pip_becomes_pip_and_fetches_become_curl():
    assert argvs("python3 -m pip install -U django") == [["pip", "install", "-U", "django"]]
    code = "import urllib.request as u\nu.urlopen('https://code.example/x.tar.gz').read()"
    assert [list(c.argv) for c in python_commands(code)] == [["curl", "https://code.example/x.tar.gz"]]
    assert python_commands("print('https://code.example/x')") == []  # a URL not fetched


def test_ipython_cells():
    assert [list(c.argv) for c in ipython_commands("%%bash\ncd /t\ngit reflog")] == [["cd", "/t"], ["git", "reflog"]]
    cell = "import os\n!git log --all\nout = !git fetch\n%pip install -U django\nif x != y:\n    os.system('git pull')"
    assert [list(c.argv) for c in ipython_commands(cell)] == [
        ["git", "log", "--all"], ["git", "fetch"], ["pip", "install", "-U", "django"], ["git", "pull"]]


def test_lexer_never_raises_on_odd_input():
    for text in ["$(", "`", "'", '"$(', "<<", "a <<EOF", "${", "\\", ")))(((", "x=$((1<<2))", "\x00\xff"]:
        lex(text)
        commands(text)
