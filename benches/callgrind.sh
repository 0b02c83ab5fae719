#!/usr/bin/env bash
# Instructions per keep-alive request, counted by callgrind: repeatable on a busy machine,
# where wall-clock req/s are not. Compare two builds with it before and after a change.
#
# Usage: benches/callgrind.sh [PATH [N]]     (default /api/v1/health, 5000 requests)
# Needs valgrind and curl (Debian: apt-get install -y valgrind curl). Builds the release
# profile with debug info and without stripping into target/prof (so callgrind_annotate
# names functions), runs the daemon under callgrind in a temp dir, sends N requests on one
# keep-alive connection, stops the daemon and prints the total and the count per request
# (startup and shutdown included, the same for both builds; curl's request headers, so
# the counts differ a little from a wrk-driven run). The profile is
# kept: callgrind_annotate --inclusive=yes DIR/callgrind.out
set -euo pipefail
path=${1:-/api/v1/health}
n=${2:-5000}
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
for tool in valgrind curl callgrind_annotate; do
	command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool not found" >&2; exit 1; }
done
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 \
	cargo build --release --quiet --manifest-path "$root/Cargo.toml" --target-dir "$root/target/prof"
bin=$root/target/prof/release/vsm-daemon
dir=$(mktemp -d /tmp/vsm-callgrind.XXXXXX)
printf '[monitoring]\nhealth_check_interval_ms = 3600000\n' >"$dir/config.toml"
valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
	"$bin" start --config "$dir/config.toml" --state-dir "$dir/state" --socket "$dir/sock" \
	--listen 127.0.0.1:0 --json >"$dir/ready.json" 2>"$dir/daemon.log" &
daemon=$!
for _ in $(seq 600); do [ -s "$dir/ready.json" ] && break; sleep 0.1; done
addr=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' "$dir/ready.json")
[ -n "$addr" ] || { echo "callgrind.sh: the daemon did not start (see $dir)" >&2; kill "$daemon"; exit 1; }
# One curl, N URLs: curl keeps the one connection alive across them.
for _ in $(seq "$n"); do printf 'url = "http://%s%s"\noutput = "/dev/null"\n' "$addr" "$path"; done >"$dir/urls"
curl -s -w '%{http_code}\n' -H "Authorization: Bearer $(cat "$dir/state/api_token")" \
	--config "$dir/urls" | sort | uniq -c >&2
kill -TERM "$daemon"
wait "$daemon" || true
total=$(callgrind_annotate "$dir/callgrind.out" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
echo "$path: $total instructions for $n requests: $((total / n)) per request (profile: $dir/callgrind.out)"
