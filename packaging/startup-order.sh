#!/usr/bin/env bash
# Regenerates packaging/startup-functions.txt, the functions the daemon runs from exec to idle
# (start on the embedded defaults, one `status`, 65 s idle: two rounds of the 30 s timers,
# SIGTERM), which link-ordered.sh places together. Needs valgrind (callgrind) and the size build's symbols:
#   packaging/startup-order.sh "$(packaging/build-static.sh).sym"
# (then rebuild: touch src/main.rs; packaging/build-static.sh).
# Names are written without their hashes (see link-ordered.sh), sorted, one a line.
set -euo pipefail
bin=${1:?usage: packaging/startup-order.sh BIN_WITH_SYMBOLS}
command -v valgrind >/dev/null 2>&1 || { echo "startup-order.sh: valgrind not found" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || { echo "startup-order.sh: curl not found" >&2; exit 1; }
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$dir/cg.out" \
	"$bin" start --listen 127.0.0.1:0 --socket "$dir/sock" --state-dir "$dir/state" --json \
	>/dev/null 2>"$dir/log" </dev/null &
pid=$!
for _ in $(seq 600); do
	curl -sf --unix-socket "$dir/sock" http://localhost/api/v1/status >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
	sleep 0.1
done
sleep 65
kill -TERM "$pid"
wait "$pid" || true
# callgrind names a function once, on its first fn= or cfn= line.
{
	printf '# Functions vsm-daemon runs from exec to idle, hashes removed (packaging/startup-order.sh).\n'
	sed -n 's/^c\{0,1\}fn=([0-9]*) //p' "$dir/cg.out" | grep -v '^0x\|^(' \
		| sed -E "s/'[0-9]+$//; s/Cs[0-9A-Za-z]+_/C/g; s/\.[0-9]+$//; s/17h[0-9a-f]+E$/E/" | LC_ALL=C sort -u
} >"$here/startup-functions.txt"
echo "startup-order.sh: $(grep -vc '^#' "$here/startup-functions.txt") functions in $here/startup-functions.txt" >&2
