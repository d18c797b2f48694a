#!/usr/bin/env bash
# Interop test: the Python carrier client (examples/python, grpcio) against the built gateway
# over mutual TLS, checked against what the Rust side stores and reads.
#
# A fresh PKI (`opconnect certs init`) and SQLite file; the platform registers contoso,
# provisions and assigns numbers and ingests 20 call records (`opconnect admin`); then the
# Python client watches (snapshot, then replay from revision 0), follows the call records
# (committing its cursor) and uploads 21 durations (one invalid). Checks: the events and
# records it printed, that `opconnect carrier records` finds nothing after the cursor Python
# committed, that the summary `opconnect carrier upload --upload-id <python's id>` reads back
# equals Python's, and that reconciliation counts 20 exact calls.
# Usage: scripts/python-interop.sh [path/to/opconnect]   (needs grpcio grpcio-tools grpcio-status)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/opconnect}")
py=examples/python

work=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; cat "$work/server.log" 2>/dev/null | tail -20; exit 1; }
ok() { echo "ok: $*"; }

bash "$py/generate.sh" >/dev/null
"$bin" certs init --dir "$work/certs" --carrier contoso --platform ops >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --database-url "sqlite://$work/interop.db?mode=rwc" \
  --tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server.key" \
  --client-ca "$work/certs/ca.pem" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
grep -q "listening on" "$work/server.log" || fail "server did not start"

admin() {
  "$bin" admin --endpoint "https://localhost:$port" --ca "$work/certs/ca.pem" \
    --cert "$work/certs/platform-ops.pem" --key "$work/certs/platform-ops.key" "$@"
}
export OPCONNECT_CARRIER_ENDPOINT="https://localhost:$port" OPCONNECT_CARRIER_CA="$work/certs/ca.pem" \
  OPCONNECT_CARRIER_CERT="$work/certs/carrier-contoso.pem" OPCONNECT_CARRIER_KEY="$work/certs/carrier-contoso.key"
python_client() {
  python3 "$py/carrier_client.py" --endpoint "localhost:$port" "$@"
}

tenant=72f988bf-86f1-41af-91ab-2d7cd011db47
admin create-carrier contoso --name Contoso --sip-domain sip.contoso.example >/dev/null
admin provision --carrier contoso --tenant "$tenant" --country US +14255550100 +14255550101 >/dev/null
admin assign +14255550100 --target user-1 >/dev/null
for i in $(seq -w 1 20); do
  printf '{"carrier_id":"contoso","call_id":"call-%s","tenant_id":"%s","direction":"outbound","caller_number":"+14255550100","callee_number":"+12065550100","start_time":"2026-11-27T10:%s:00Z","end_time":"2026-11-27T10:%s:30Z","duration_seconds":30,"successful":true,"final_sip_code":200}\n' \
    "$i" "$tenant" "$i" "$i"
done >"$work/calls.jsonl"
admin import-call-records "$work/calls.jsonl" >/dev/null
ok "platform side: carrier, 2 numbers (1 assigned), 20 call records"

# Watch: a snapshot of both numbers, then the whole log replayed from revision 0.
snapshot=$(python_client watch)
[ "$(grep -c '"NUMBER_EVENT_TYPE_SNAPSHOT"' <<<"$snapshot")" = 2 ] || fail "snapshot: $snapshot"
revision=$(grep '"snapshot_complete"' <<<"$snapshot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
replay=$(python_client watch --after 0 --until-revision "$revision")
[ "$(grep -c '"kind": "event"' <<<"$replay")" = "$revision" ] || fail "replay of $revision events: $replay"
grep -q NUMBER_EVENT_TYPE_ASSIGNED <<<"$replay" || fail "replay lacks the assignment"
ok "python watch: snapshot of 2 numbers at revision $revision, replay of $revision events"

# Follow: 20 records with cursors 1..20, committed; the Rust client finds nothing after it.
followed=$(python_client follow --commit-every 7)
cursors=$(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["cursor"]) for l in sys.stdin))' <<<"$followed")
[ "$cursors" = "$(seq -s ' ' 1 20)" ] || fail "followed cursors: $cursors"
left=$("$bin" carrier records)
[ -z "$left" ] || fail "records after python's committed cursor: $left"
ok "python follow: 20 records, cursor committed (rust finds none after it)"

# Upload: 20 durations (equal to the platform's) and one without a call id.
python3 - "$work/calls.jsonl" >"$work/durations.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(json.dumps({k: r[k] for k in ("call_id", "tenant_id", "direction", "caller_number",
                                       "callee_number", "start_time", "duration_seconds")}))
print(json.dumps({"call_id": "", "tenant_id": r["tenant_id"], "direction": "outbound",
                  "caller_number": "+14255550100", "callee_number": "+12065550100",
                  "start_time": "2026-11-27T11:00:00Z", "duration_seconds": 5}))
PY
status=0
summary=$(python_client upload "$work/durations.jsonl" --upload-id py-interop-1 --batch-size 8) || status=$?
[ "$status" = 1 ] || fail "python upload exit code $status (1 expected: one record rejected)"
read -r received accepted duplicates rejected < <(python3 -c '
import json,sys; s=json.loads(sys.stdin.read())["summary"]
print(*(int(s.get(k, 0)) for k in ("received","accepted","duplicates","rejected")))' <<<"$summary")
[ "$received $accepted $duplicates $rejected" = "21 20 0 1" ] || fail "python summary: $summary"
# The Rust client reads the stored summary back under the same id: it must be Python's.
status=0
table=$("$bin" carrier upload "$work/durations.jsonl" --upload-id py-interop-1) || status=$?
[ "$status" = 1 ] || fail "rust upload exit code $status"
row() { awk -v k="$1" '$1 == k {print $2}' <<<"$table"; }
[ "$(row RECEIVED) $(row ACCEPTED) $(row DUPLICATES) $(row REJECTED)" = "21 20 0 1" ] \
  || fail "stored summary differs from python's: $table"
exact=$(admin reconcile --carrier contoso --from 2026-11-27 --to 2026-11-27 | awk '$1 == "EXACT" {print $2}')
[ "$exact" = 20 ] || fail "reconciliation: $exact exact calls"
ok "python upload: 21 received, 20 accepted, 1 rejected; rust reads the same summary; 20 calls reconcile exactly"
echo "python interop: all checks passed"
