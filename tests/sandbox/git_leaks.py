"""A repository that hides a later fix everywhere git can keep it, and the check that the
scrub left nothing of it: shared by the Docker and the local sandbox tests."""

from __future__ import annotations

# Run in the repository at its base commit; prints the fix commit's and the dangling blob's ids.
# The fix ends with no ref and no reflog (plain `git fsck --lost-found` / `git cat-file
# --batch-all-objects` recovered such a commit before the scrub always rebuilt the object store),
# and is also named or held by: ORIG_HEAD, FETCH_HEAD, COMMIT_EDITMSG, a tag in packed-refs, the
# stash, notes, a replace ref, a kept pack, an alternate object store, a commit-graph, the index
# and fsck's lost-found.
LEAK_SETUP = r"""
set -e
base=$(git rev-parse HEAD)
echo 'FIXED = True' > fix.py && git add fix.py && git commit -q -m 'the fix'
fix=$(git rev-parse HEAD)
git commit-graph write --reachable
printf '%s\n' "$fix" | git pack-objects -q --revs .git/objects/pack/pack > .git/kept
touch ".git/objects/pack/pack-$(cat .git/kept).keep" && rm .git/kept
alt=$(mktemp -d) && cp -r .git/objects/. "$alt" && echo "$alt" > .git/objects/info/alternates
git tag v-fix "$fix" && git pack-refs --all && git tag -d v-fix >/dev/null && git tag v-fix-loose "$fix"
git reset -q --hard "$base"
printf '%s\t\tbranch main of origin\n' "$fix" > .git/FETCH_HEAD
echo 'wip' >> README.md && git stash -q
git notes add -m 'see the fix' "$base"
git replace "$base" "$fix" 2>/dev/null || git replace -f "$base" "$fix"
blob=$(printf 'the fixed source\n' | git hash-object -w --stdin)
git update-index --add --cacheinfo "100644,$blob,leak.txt"
git tag -d v-fix-loose >/dev/null
rm -rf .git/logs
git fsck --lost-found >/dev/null 2>&1 || true
echo "$fix $blob"
"""

# What must hold after the scrub; prints one line per violation (nothing when clean).
_LEAK_CHECK = r"""
have=$(git cat-file --batch-all-objects --batch-check='%(objectname)' | sort)
want=$(git rev-list --objects HEAD | cut -c1-40 | sort)
[ "$have" = "$want" ] || echo "objects outside HEAD: $(comm -23 <(echo "$have") <(echo "$want") | wc -l)"
for oid in "$fix" "$blob"; do ! git cat-file -e "$oid" 2>/dev/null || echo "object $oid still readable"; done
lost=$(git fsck --lost-found 2>&1) || echo "fsck failed: $lost"
[ -z "$(echo "$lost" | grep -i dangling)" ] || echo "fsck finds: $lost"
[ -z "$(find .git/lost-found -type f 2>/dev/null)" ] || echo "lost-found holds files"
[ "$(git log --all --format=%H)" = "$(git rev-parse HEAD)" ] || echo "log --all: $(git log --all --oneline | wc -l)"
[ -z "$(git stash list; git notes list; git replace -l; git tag)" ] || echo "stash/notes/replace/tag left"
[ ! -e .git/objects/info/alternates ] || echo "alternates left"
hits=$(grep -rlF "$fix" .git 2>/dev/null) && echo "fix id named in: $hits"
[ -z "$(git status --porcelain)" ] || echo "status: $(git status --porcelain)"
git fsck --full --strict >/dev/null 2>&1 || echo "repository broken: $(git fsck --full 2>&1 | head -3)"
exit 0
"""


def leak_check(fix: str, blob: str) -> str:
    """The check script for the ids LEAK_SETUP printed."""
    return f"fix={fix}; blob={blob}\n{_LEAK_CHECK}"
