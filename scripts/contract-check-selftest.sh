#!/usr/bin/env bash
# Shows that the contract check catches a breaking change: copies buf.yaml and proto/ into a
# temporary git repository, commits them on main, then commits (1) a compatible change (a new,
# documented field), which must pass, and (2) a renumbered field, which must fail.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BUF=${BUF:-$here/.ci/.tools/node_modules/.bin/buf}
case $BUF in /*) ;; */*) BUF="$PWD/$BUF" ;; esac
export BUF
repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT
git -C "$repo" init --quiet --initial-branch=main
git -C "$repo" config user.email selftest@example.invalid
git -C "$repo" config user.name selftest
cp -r "$here/buf.yaml" "$here/proto" "$repo/"
git -C "$repo" add . && git -C "$repo" commit --quiet -m "contract"
file="$repo/proto/opconnect/v1/numbers.proto"

# A single commit: nothing to compare with, the check passes.
bash "$here/scripts/contract-check.sh" "$repo" >/dev/null || { echo "FAIL: single commit"; exit 1; }

# Compatible: a new field with a new number.
python3 - "$file" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
anchor = "  int64 revision = 12;\n"
assert anchor in text, "TelephoneNumber.revision moved; update the self-test"
text = text.replace(anchor, anchor + "  // Added by the contract self-test.\n  string note = 99;\n", 1)
open(path, "w").write(text)
PY
git -C "$repo" commit --quiet -am "a new field"
bash "$here/scripts/contract-check.sh" "$repo" >/dev/null \
  || { echo "FAIL: a compatible change was refused"; exit 1; }
echo "ok: a new field passes"

# Breaking: the same field under another number.
sed -i 's/  int64 revision = 12;/  int64 revision = 98;/' "$file"
git -C "$repo" commit --quiet -am "renumber a field"
if out=$(bash "$here/scripts/contract-check.sh" "$repo" 2>&1); then
  echo "FAIL: a renumbered field passed the contract check"; echo "$out"; exit 1
fi
grep -q 'FIELD_SAME\|FIELD_NO_DELETE\|changed\|deleted' <<<"$out" || { echo "FAIL: unexpected output: $out"; exit 1; }
echo "ok: a renumbered field fails: $(grep -m1 "proto:" <<<"$out")"
