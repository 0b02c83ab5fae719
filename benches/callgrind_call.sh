#!/usr/bin/env bash
# Instructions the daemon spends per tool call, counted by callgrind: repeatable on a busy
# machine, where the wall-clock overhead of `cargo bench --bench gateway -- latency` is not.
#
# Usage: benches/callgrind_call.sh [N]      (default 2000 calls of each kind)
# Needs valgrind and python3. Builds the release profile with debug info and without
# stripping into target/prof (as benches/callgrind.sh), runs the daemon under callgrind in a
# temp dir with tests/fixtures/mcp_fixture.py registered as `fx`, and then, for each kind of
# call, zeroes the counters (callgrind_control -z), makes N calls of `echo` one after the
# other on one keep-alive TCP connection with the token, and dumps the counters
# (callgrind_control -d): so only the calls are counted (all of the daemon's threads; not the
# fixture, not the client). Kinds: `/mcp` in a 2025-11-25 session, `/mcp` in the 2026-07-28
# era (stateless, `_meta` and headers), and `POST /api/v1/mcp/servers/fx/tools/call`.
# Prints the instructions and the calls into malloc/calloc/realloc per call of each (musl's
# allocator costs more per call than glibc's, so the count matters for the static binary); the
# profiles are kept (callgrind_annotate --inclusive=yes DIR/callgrind.out.N).
# BIN=path overrides the binary (to count another build the same way).
set -euo pipefail
n=${1:-2000}
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
for tool in valgrind callgrind_control callgrind_annotate python3; do
	command -v "$tool" >/dev/null || { echo "callgrind_call.sh: $tool not found" >&2; exit 1; }
done
if [ -z "${BIN:-}" ]; then
	CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 \
		cargo build --release --quiet --manifest-path "$root/Cargo.toml" --target-dir "$root/target/prof"
	BIN=$root/target/prof/release/vsm-daemon
fi
dir=$(mktemp -d /tmp/vsm-callgrind-call.XXXXXX)
# Valgrind lets a client set RLIMIT_NOFILE only to the limits it reserves for it, and a
# server's limit is set between fork and exec, still under valgrind: give servers exactly that.
nofile=$(valgrind --tool=none -q bash -c 'ulimit -Hn')
printf '[monitoring]\nhealth_check_interval_ms = 3600000\nperformance_check_interval_ms = 3600000\n[mcp_servers]\nmax_open_files = %s\n' "$nofile" >"$dir/config.toml"
valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
	"$BIN" start --config "$dir/config.toml" --state-dir "$dir/state" --socket "$dir/sock" \
	--listen 127.0.0.1:0 --json >"$dir/ready.json" 2>"$dir/daemon.log" &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -s "$dir/ready.json" ] && break; sleep 0.1; done
addr=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' "$dir/ready.json")
[ -n "$addr" ] || { echo "callgrind_call.sh: the daemon did not start (see $dir)" >&2; exit 1; }
"$BIN" --socket "$dir/sock" mcp register fx -- python3 "$root/tests/fixtures/mcp_fixture.py" >/dev/null
python3 - "$addr" "$(head -n 1 "$dir/state/api_token")" "$n" "$daemon" "$dir" <<'PY'
import http.client, json, subprocess, sys, time

addr, token, n, pid, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=120)
base = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"}
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {}}

def post(path, body, headers):
    conn.request("POST", path, json.dumps(body), {**base, **headers})
    r = conn.getresponse()
    return r, json.loads(r.read() or b"null")

def get(path):
    conn.request("GET", path, headers=base)
    r = conn.getresponse()
    return json.loads(r.read())

deadline = time.time() + 120
while get("/api/v1/mcp/servers/fx")["data"]["status"] != "active":
    if time.time() > deadline:
        sys.exit("fx did not become active")
    time.sleep(0.1)

r, v = post("/mcp", {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                     "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                "clientInfo": {"name": "callgrind", "version": "0"}}}, {})
session = {"Mcp-Session-Id": r.getheader("Mcp-Session-Id"), "MCP-Protocol-Version": "2025-11-25"}
post("/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
while True:
    _, v = post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)
    if any(t["name"] == "fx__echo" for t in v["result"]["tools"]):
        break
    if time.time() > deadline:
        sys.exit("fx__echo is not offered on /mcp")
    time.sleep(0.1)

def session_call(i):
    _, v = post("/mcp", {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": "fx__echo", "arguments": {"message": "m"}}}, session)
    return v["result"]["content"][0]["text"]

modern_headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "fx__echo"}
def modern_call(i):
    _, v = post("/mcp", {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": "fx__echo", "arguments": {"message": "m"}, "_meta": META}},
                modern_headers)
    return v["result"]["content"][0]["text"]

def rest_call(i):
    _, v = post("/api/v1/mcp/servers/fx/tools/call",
                {"name": "echo", "arguments": {"message": "m"}}, {})
    return v["data"]["result"]["content"][0]["text"]

for k, (name, call) in enumerate([("mcp-session", session_call), ("mcp-modern", modern_call),
                                  ("rest", rest_call)]):
    for i in range(20):  # warm
        call(i)
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    for i in range(n):
        if call(i) != "m":
            sys.exit(f"{name}: unexpected answer")
    subprocess.run(["callgrind_control", "-d", name, pid], check=True, capture_output=True)
PY
kill -TERM "$daemon"
wait "$daemon" || true
trap - EXIT
for f in "$dir"/callgrind.out.*; do
	name=$(sed -n 's/^desc: Trigger: dump //p' "$f" | head -n 1)
	total=$(sed -n 's/^summary: //p; s/^totals: //p' "$f" | head -n 1)
	[ -n "$name" ] || continue
	allocs=$(python3 - "$f" <<'PY'
import re, sys
# Calls into the C allocator (malloc, calloc, realloc) in the profile: its `cfn=(id) name` lines
# name a callee once and then by id; each `calls=N` line after one counts N calls to it.
names, callee, count = {}, None, 0
for line in open(sys.argv[1]):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, ident, name = m.groups()
        if name:
            names[ident] = name
        if kind == "cfn":
            callee = names.get(ident)
    elif line.startswith("calls=") and callee in ("malloc", "calloc", "realloc"):
        count += int(line[6:].split()[0])
print(count)
PY
)
	if [ "$allocs" -gt 0 ]; then
		allocs="$((allocs / n)).$(((allocs * 10 / n) % 10)) allocations per call"
	else
		allocs="allocations not counted (no malloc symbol: a stripped binary)"
	fi
	echo "$name: $total instructions for $n calls: $((total / n)) per call, $allocs ($f)"
done
