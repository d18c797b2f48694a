#!/usr/bin/env bash
# Runs every command of README.md's "For carriers" section against a live gateway, so none
# goes stale. Starts the built binary on the development certificates and a fresh SQLite
# file (port 50051 in the README becomes a free port), registers contoso with two numbers and
# four call records, then runs each ```sh block of the section in one shell, command by
# command, in a scratch directory (certs/ and examples/ linked in). A command must exit 0,
# except grpcurl with -max-time, which stops a stream by failing: it must print something.
# Usage: scripts/readme-carriers.sh [path/to/opconnect]   (needs grpcurl, python3 with grpcio)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$repo/target/debug/opconnect}")
work=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/bin" "$work/run"
ln -s "$bin" "$work/bin/opconnect"
ln -s "$repo/certs" "$work/run/certs"
ln -s "$repo/examples" "$work/run/examples"
export PATH="$work/bin:$PATH"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
opconnect serve --listen "127.0.0.1:$port" --database-url "sqlite://$work/readme.db?mode=rwc" \
  --tls-cert "$repo/certs/server.pem" --tls-key "$repo/certs/server.key" \
  --client-ca "$repo/certs/ca.pem" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
grep -q "listening on" "$work/server.log" || { cat "$work/server.log"; exit 1; }

admin() {
  opconnect admin --endpoint "https://localhost:$port" --ca "$repo/certs/ca.pem" \
    --cert "$repo/certs/platform-ops.pem" --key "$repo/certs/platform-ops.key" "$@" >/dev/null
}
tenant=72f988bf-86f1-41af-91ab-2d7cd011db47
admin create-carrier contoso --name Contoso --sip-domain sip.contoso.example
admin provision --carrier contoso --tenant "$tenant" --country US +14255550100 +14255550101
admin assign +14255550100 --target user-1
for i in 1 2 3 4; do
  printf '{"carrier_id":"contoso","call_id":"readme-%s","tenant_id":"%s","direction":"outbound","caller_number":"+14255550100","callee_number":"+1206555010%s","start_time":"2026-11-27T10:0%s:00Z","end_time":"2026-11-27T10:0%s:59Z","duration_seconds":59,"successful":true,"final_sip_code":200}\n' \
    "$i" "$tenant" "$i" "$i" "$i"
done >"$work/calls.jsonl"
admin import-call-records "$work/calls.jsonl"

# The section's shell blocks, split into commands (a command continues over trailing
# backslashes and through a here-document), each wrapped in an exit-code check.
python3 - "$repo/README.md" "$port" >"$work/section.sh" <<'PY'
import re, shlex, sys
text = open(sys.argv[1]).read()
port = sys.argv[2]
section = text.split("\n## For carriers\n", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
assert blocks, "no sh blocks in the For carriers section"
commands = []
for block in blocks:
    lines = block.replace("50051", port).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = [line]
        while command[-1].endswith("\\") and i < len(lines):
            command.append(lines[i]); i += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            while i < len(lines):
                command.append(lines[i]); i += 1
                if command[-1].strip() == heredoc.group(1):
                    break
        commands.append("\n".join(command))
print("set -uo pipefail")
print('fail() { echo "FAIL: $1 (exit $2)"; exit 1; }')
for n, command in enumerate(commands, 1):
    first = command.splitlines()[0]
    print(f"echo {shlex.quote(f'[{n}/{len(commands)}] {first}')}")
    if "-max-time" in command:
        print(f"out=$({command}\n) ; rc=$?")
        print('[ -n "$out" ] || fail ' + shlex.quote(first) + ' "$rc"; echo "$out" | head -3')
    else:
        print(command)
        print("rc=$?; [ $rc -eq 0 ] || fail " + shlex.quote(first) + ' "$rc"')
print(f'echo "readme-carriers: {len(commands)} commands passed"')
PY
cd "$work/run"
bash "$work/section.sh"
