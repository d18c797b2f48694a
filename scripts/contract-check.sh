#!/usr/bin/env bash
# The proto contract check: `buf lint`, `buf format --diff --exit-code`, and `buf breaking`
# (rules of buf.yaml: FILE) against proto/ of the newest commit of main that is not the
# commit being checked (HEAD~1 when main is checked out; main's tip on a branch). Fails on
# any breaking change: renumbered, renamed or removed fields, changed types, removed RPCs...
#
# Usage: scripts/contract-check.sh [REPO_DIR]   (default: this repository)
# BUF: the buf binary (default .ci/.tools/node_modules/.bin/buf of this repository).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BUF=${BUF:-$here/.ci/.tools/node_modules/.bin/buf}
case $BUF in /*) ;; */*) BUF="$PWD/$BUF" ;; esac
repo=$(cd "${1:-$here}" && pwd)
cd "$repo"

echo "buf lint"
"$BUF" lint
echo "buf format --diff --exit-code"
"$BUF" format --diff --exit-code

head=$(git rev-parse HEAD)
if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  # A shallow clone (CI's may be one): fetch the previous commit to compare against.
  git fetch --quiet --deepen=1 2>/dev/null || true
fi
if git rev-parse -q --verify 'refs/heads/main^{commit}' >/dev/null; then
  against=$(git rev-list --first-parent -n 2 main | grep -vx "$head" | head -1 || true)
else
  against=$(git rev-parse -q --verify 'HEAD~1^{commit}' || true)
fi
if [ -z "$against" ]; then
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "buf breaking: a shallow clone without the previous commit; fetch more history" >&2
    exit 1
  fi
  echo "buf breaking: skipped, main has no commit before this one"
  exit 0
fi
if ! git cat-file -e "$against:buf.yaml" 2>/dev/null; then
  echo "buf breaking: skipped, $against has no buf.yaml"
  exit 0
fi
base=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$base/tree" >/dev/null 2>&1 || true; rm -rf "$base"' EXIT
git worktree add --quiet --detach "$base/tree" "$against"
echo "buf breaking against $(git log -1 --format='%h %s' "$against")"
"$BUF" breaking --against "$base/tree"
echo "contract check passed"
