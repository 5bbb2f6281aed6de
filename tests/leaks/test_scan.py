"""The leak detector, table-driven: actions that read the fix from outside the task are
caught (with the rule's name and the matched command), the ordinary ones are not."""

from __future__ import annotations

import pytest

from swe_srl.actions import make_action
from swe_srl.leaks import RULES, Leak, ScanState, project_names, scan_action, scan_command, scan_trajectory
from swe_srl.schemas import Step, Trajectory

PROJECT = frozenset({"django"})


def rules(command: str, **state) -> list[str]:
    return [leak.rule for leak in scan_command(command, ScanState(projects=PROJECT, **state))]


POSITIVES = [
    # history of every ref
    ("git log --all", "git-all-refs"),
    ("cd /testbed && git log --all --oneline | head -20", "git-all-refs"),
    ("git -C /testbed --no-pager log --branches", "git-all-refs"),
    ("git --git-dir=/testbed/.git log --remotes=origin", "git-all-refs"),
    ("git log --glob='refs/*' -p", "git-all-refs"),
    ("git log --tags --oneline", "git-all-refs"),
    ("git rev-list --all | xargs git show", "git-all-refs"),
    ("git rev-parse --remotes", "git-all-refs"),
    ("git show ':/Fix the parser'", "git-all-refs"),
    ("(cd /repo; git log --all)", "git-all-refs"),
    ('echo "$(git log --all -1)"', "git-all-refs"),
    ("bash -c 'git log --all'", "git-all-refs"),
    ("g'i't lo\\g --a\"ll\"", "git-all-refs"),  # quoting that hides the words from a plain text search
    ("git branch -a", "git-list-refs"),
    ("git branch -rv", "git-list-refs"),
    ("git show-ref", "git-list-refs"),
    ("git for-each-ref refs/", "git-list-refs"),
    # reflog
    ("git reflog", "git-reflog"),
    ("git reflog show HEAD", "git-reflog"),
    ("git log -g --oneline", "git-reflog"),
    ("git log --walk-reflogs", "git-reflog"),
    ("git diff HEAD@{2}", "git-reflog"),
    ("git checkout @{-1}", "git-reflog"),
    # other commits
    ("git show abc1234f", "git-other-revision"),
    ("git show abc1234f:django/forms.py", "git-other-revision"),
    ("git diff HEAD..abc1234f", "git-other-revision"),
    ("git cherry-pick 1a2b3c4d5e", "git-other-revision"),
    ("git cherry-pick -m 1 1a2b3c4d5e", "git-other-revision"),
    ("git diff -b v4.0.1", "git-other-revision"),  # -b: a flag of diff, not checkout's -b NAME
    ("git log -m -p abc1234f", "git-other-revision"),
    ("git worktree add -b w /tmp/w origin/main", "git-other-revision"),
    ("git checkout origin/main -- django/forms.py", "git-other-revision"),
    ("git diff upstream/stable", "git-other-revision"),
    ("git log origin", "git-other-revision"),
    ("git log refs/remotes/origin/fix", "git-other-revision"),
    ("git diff v4.0.1", "git-other-revision"),
    ("git checkout tags/release-2", "git-other-revision"),
    ("git show FETCH_HEAD", "git-other-revision"),
    ("git log ORIG_HEAD", "git-other-revision"),
    ("git diff @{upstream}", "git-other-revision"),
    ("git restore --source=origin/main django/forms.py", "git-other-revision"),
    ("git restore -s abc1234f django/forms.py", "git-other-revision"),
    ("git checkout -b mine origin/main", "git-other-revision"),
    ("git worktree add /tmp/w v4.1", "git-other-revision"),
    ("git grep -n parse v4.1", "git-other-revision"),
    ("git cat-file -p 0123abcd", "git-other-revision"),
    # stashes the agent did not make
    ("git stash pop", "git-foreign-stash"),
    ("git stash apply stash@{1}", "git-foreign-stash"),
    ("git stash show -p", "git-foreign-stash"),
    ("git show stash@{0}", "git-foreign-stash"),
    ("git diff stash", "git-foreign-stash"),
    # unreachable objects
    ("git fsck", "git-unreachable-objects"),
    ("git fsck --lost-found", "git-unreachable-objects"),
    ("git fsck --no-dangling --unreachable", "git-unreachable-objects"),
    ("git cat-file --batch-all-objects --batch-check", "git-unreachable-objects"),
    ("git verify-pack -v .git/objects/pack/p.idx", "git-unreachable-objects"),
    ("git prune --dry-run", "git-unreachable-objects"),
    # git's own files
    ("cat .git/packed-refs", "git-internals"),
    ("tail /testbed/.git/logs/HEAD", "git-internals"),
    ("ls -la .git/refs/remotes/origin", "git-internals"),
    ("find .git -type f", "git-internals"),
    ("grep -r fix_parser .git/", "git-internals"),
    ("ls -R /testbed/.git", "git-internals"),
    # fetching history
    ("git fetch origin", "vcs-fetch"),
    ("git fetch --all", "vcs-fetch"),
    ("git pull --rebase", "vcs-fetch"),
    ("git clone https://code.example/django/django /tmp/d", "vcs-fetch"),
    ("git ls-remote origin", "vcs-fetch"),
    ("git remote update", "vcs-fetch"),
    ("git remote add -f up https://code.example/d.git", "vcs-fetch"),
    ("git submodule update --remote", "vcs-fetch"),
    ("hg clone https://hg.example/django", "vcs-fetch"),
    ("svn export https://svn.example/django/trunk", "vcs-fetch"),
    # the project from a package index
    ("pip download anything", "package-fetch"),
    ("pip install django==4.1", "package-fetch"),
    ("pip install 'Django>=4.1'", "package-fetch"),
    ("pip install 'django[argon2] @ https://code.example/django.zip'", "package-fetch"),
    ("pip install --force-reinstall django", "package-fetch"),
    ("pip install -U django", "package-fetch"),
    ("pip3 install --upgrade --no-deps Django", "package-fetch"),
    ("python -m pip install --pre django", "package-fetch"),
    ("uv pip install django==4.2", "package-fetch"),
    ("conda install -c conda-forge django=4.2", "package-fetch"),
    ("pip install --index-url https://index.example/simple django==4.2", "package-fetch"),
    ("pip install -e git+https://code.example/django/django.git#egg=django", "package-fetch"),
    ("pip install https://files.example/packages/ab/cd/Django-4.2-py3-none-any.whl", "package-fetch"),
    ("curl -s https://index.example/pypi/django/json", "package-fetch"),
    ("wget https://index.example/simple/django/", "package-fetch"),
    # a code host, the project's archive or patch
    ("curl -L https://github.com/django/django/archive/main.zip -o x.zip", "code-host-fetch"),
    ("wget -qO- https://raw.githubusercontent.com/django/django/main/django/forms.py", "code-host-fetch"),
    ("curl https://api.github.com/repos/django/django/pulls/123", "code-host-fetch"),
    ("curl -O https://mirror.example/releases/django-4.2.tar.gz", "code-host-fetch"),
    ("curl https://review.example/django/commit/abc.patch", "code-host-fetch"),
    ("gh pr diff 123", "code-host-fetch"),
    ("python -c \"import requests; print(requests.get('https://github.com/django/django/pull/1.diff').text)\"",
     "code-host-fetch"),
]

NEGATIVES = [
    "git diff", "git diff --cached", "git status", "git status --short", "git log -3", "git log --oneline -5",
    "git log -p -- django/forms.py", "git log --author=me --since=2.weeks --grep fix", "git log -n 3 --format=%H",
    "git show HEAD", "git show HEAD~2:setup.py", "git show --stat", "git diff HEAD~1..HEAD", "git diff main",
    "git blame -L 10,20 django/forms.py", "git checkout -- django/forms.py", "git checkout .", "git restore x.py",
    "git add -A && git diff --cached", "git add --all", "git commit -am wip", "git stash list",
    "git commit -m 'fix for v4.1 and abc1234f'", "git branch -m old v4.1", "git log -S v4.1 --oneline",
    "git grep -n 1.2.3", "git grep -e fixme", "git branch", "git branch -vv", "git branch -d old", "git tag",
    "git remote -v", "git rev-parse HEAD", "git rev-parse --show-toplevel", "git describe --tags --all",
    "git diff --no-index a.txt v1.0", "git fsck --no-dangling", "git reflog expire --all",
    "git diff -- django/db/models/fields/__init__.py > patch.txt",
    "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A && git diff --cached",
    "pip install -e .", "pip install -e '.[dev]'", "pip install django", "pip install 'django[argon2]'",
    "pip install -U -e .", "pip install asgiref", "pip install pytest==7.0 pytest-mock",
    "pip install -r requirements.txt", "pip install -U pip setuptools", "pip install ./dist/django-4.2.whl",
    "pip list | grep -i django", "pip show django", "python -m pytest -q tests",
    "grep -r 'git log --all' .", "echo 'git log --all'", "cat .git/HEAD", "cat .git/config", "ls .git",
    "ls -la /testbed", "find . -name '*.py' | xargs grep -n parse", "ls .github/workflows",
    "curl localhost:8000/api", "curl -s http://127.0.0.1:8000/", "wget https://docs.example/guide.html",
    "cat > t.py <<'EOF'\nimport os\nos.system('git log --all')\nEOF",
    "python -c \"print('https://github.com/django/django')\"",
    "git reset --hard && git diff ORIG_HEAD",
    "git stash && python -m pytest -q; git stash pop",
    "git stash push -m 'mine' && git stash show -p stash@{0} && git stash drop",
]


@pytest.mark.parametrize("command, rule", POSITIVES, ids=[c for c, _ in POSITIVES])
def test_leaky_commands_are_caught(command, rule):
    found = scan_command(command, ScanState(projects=PROJECT))
    assert rule in [leak.rule for leak in found]
    assert all(leak.rule in RULES and leak.text for leak in found)


@pytest.mark.parametrize("command", NEGATIVES)
def test_ordinary_commands_are_not_flagged(command):
    assert rules(command) == []


def test_matched_text_is_the_simple_command_shortened():
    [leak] = scan_command("cd /testbed && git --no-pager log --all --oneline | head -5")
    assert leak == Leak("git-all-refs", "git --no-pager log --all --oneline")
    long = scan_command("git log --all " + "x" * 500)[0]
    assert len(long.text) == 200 and long.text.endswith("...")
    with pytest.raises(ValueError, match="unknown leak rule"):
        Leak("no-such-rule", "x")


def test_commit_ids_the_task_showed_may_be_named():
    assert rules("git show 4f1b2c3d") == ["git-other-revision"]
    assert rules("git show 4f1b2c3d", shown=["regression since commit 4f1b2c3d9e"]) == []
    assert rules("git diff 4f1b2c3d9e0f1a2b", shown=["4f1b2c3 Fix parser (#12)"]) == []


def test_own_stash_and_heads_versus_planted_ones():
    state = ScanState()
    assert scan_command("git stash", state) == () and state.stashes == 1
    assert scan_command("git stash apply", state) == ()  # its own
    assert scan_command("git stash pop", state) == () and state.stashes == 0
    assert [leak.rule for leak in scan_command("git stash pop", state)] == ["git-foreign-stash"]  # not its own
    assert scan_command("git stash -u && git stash save two", state) == () and state.stashes == 2
    assert [leak.rule for leak in scan_command("git show stash@{2}", state)] == ["git-foreign-stash"]
    assert scan_command("git show stash@{1}", state) == ()
    scan_command("git stash clear", state)
    assert state.stashes == 0
    fresh = ScanState()
    assert [leak.rule for leak in scan_command("git diff ORIG_HEAD", fresh)] == ["git-other-revision"]
    assert scan_command("git reset --soft HEAD~1", fresh) == () and scan_command("git diff ORIG_HEAD", fresh) == ()


@pytest.mark.parametrize("tool, args, rule", [
    ("str_replace_editor", {"command": "view", "path": "/testbed/.git/packed-refs"}, "git-internals"),
    ("str_replace_editor", {"command": "view", "path": "/testbed/.git"}, "git-internals"),
    ("open", {"path": ".git/logs/HEAD"}, "git-internals"),
    ("search_dir", {"search_term": "fix", "dir": ".git"}, "git-internals"),
    ("browser", {"url": "https://github.com/django/django/pull/17"}, "code-host-fetch"),
    ("browser", {"browser_actions": "goto('https://index.example/pypi/django/json')"}, "package-fetch"),
    ("ipython", {"code": "!git log --all"}, "git-all-refs"),
    ("ipython", {"code": "import subprocess\nsubprocess.run(['git', 'reflog'])"}, "git-reflog"),
    ("ipython", {"code": "%pip install -U django"}, "package-fetch"),
])
def test_other_tools(tool, args, rule):
    found = scan_action(make_action(tool, args), ScanState(projects=PROJECT))
    assert [leak.rule for leak in found] == [rule]


@pytest.mark.parametrize("tool, args", [
    ("str_replace_editor", {"command": "view", "path": "/testbed/django/forms.py"}),
    ("str_replace_editor", {"command": "create", "path": "/testbed/t.py", "file_text": "os.system('git log --all')"}),
    ("edit", {"search": "a", "replace": "git log --all"}),
    ("submit", {}),
    ("browser", {"url": "https://docs.example/ref/forms/"}),
    ("ipython", {"code": "print(1 != 2)\nx = 'git log --all'"}),
])
def test_other_tools_negatives(tool, args):
    assert scan_action(make_action(tool, args), ScanState(projects=PROJECT)) == ()


@pytest.mark.parametrize("task_id, repo, expected", [
    ("django__django-11999", None, {"django"}),
    ("scikit-learn__scikit-learn-25500", None, {"scikit-learn"}),
    ("django__django-11999_3", None, {"django"}),
    ("demo_default_windowed__marshmallow-code__marshmallow-1867", None, {"marshmallow"}),
    ("neubig/pr-viewer#5", None, {"pr-viewer"}),
    ("t-1", "Pallets/Flask_Ext", {"flask-ext"}),  # "t": too short to be a name
    ("r__0", None, set()),
])
def test_project_names(task_id, repo, expected):
    assert project_names(task_id, repo) == expected


def _step(command: str, observation: str = "") -> Step:
    return Step(action=make_action("bash", {"command": command}), observation=observation)


def test_scan_trajectory_per_step_and_observations_of_clean_steps_only():
    traj = Trajectory(task_id="django__django-1", problem_statement="Forms break.", source_format="swe-srl", steps=(
        _step("git log --oneline -2", "9f8e7d6 Refactor forms\n1a2b3c4 Add forms"),
        _step("git show 1a2b3c4"),  # printed by a clean step: fine
        _step("git log --all --oneline", "5e5e5e5 Fix forms (#123)"),
        _step("git show 5e5e5e5"),  # only a leaky step printed it
        _step("pip install -U Django"),
    ))
    found = scan_trajectory(traj)
    assert [[leak.rule for leak in step] for step in found] == [
        [], [], ["git-all-refs"], ["git-other-revision"], ["package-fetch"]]
