#!/usr/bin/env bash
# Idle footprint of a vsm-daemon binary on its embedded defaults: start it with a temp state
# dir and socket, wait until the socket answers, send one `status`, wait, then print VmRSS,
# RssAnon, RssFile (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) in kB, one line.
#
# Usage: benches/idle-rss.sh BIN [SECONDS_IDLE (default 30)] [RUNS (default 1)]
set -euo pipefail
bin=${1:?usage: benches/idle-rss.sh BIN [SECONDS] [RUNS]}
idle=${2:-30}
runs=${3:-1}
command -v curl >/dev/null 2>&1 || { echo "idle-rss.sh: curl not found" >&2; exit 1; }
field() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "$2"; }
for _ in $(seq "$runs"); do
	dir=$(mktemp -d)
	"$bin" start --listen 127.0.0.1:0 --socket "$dir/sock" --state-dir "$dir/state" --json >/dev/null 2>"$dir/log" </dev/null &
	pid=$!
	trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
	ok=
	for _ in $(seq 200); do
		if curl -sf --unix-socket "$dir/sock" http://localhost/api/v1/status >/dev/null 2>&1; then
			ok=1
			break
		fi
		kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
		sleep 0.05
	done
	[ -n "$ok" ] || { echo "idle-rss.sh: no answer on the socket in 10 s" >&2; exit 1; }
	sleep "$idle"
	s=/proc/$pid/status
	printf 'VmRSS %s RssAnon %s RssFile %s Pss %s (kB, %s s idle, %s bytes)\n' \
		"$(field VmRSS "$s")" "$(field RssAnon "$s")" "$(field RssFile "$s")" \
		"$(field Pss "/proc/$pid/smaps_rollup")" "$idle" "$(wc -c <"$bin" | tr -d ' ')"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	rm -rf "$dir"
	trap - EXIT
done
