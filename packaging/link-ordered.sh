#!/usr/bin/env bash
# Linker wrapper of build-static.sh's size build (rustc -C linker=THIS): links with cc exactly
# as rustc asked, adding lld's --symbol-ordering-file so that the functions the daemon runs
# from start-up to idle (packaging/startup-functions.txt) sit together at the start of .text.
# The kernel maps an executable's pages around each page fault; with those functions spread
# over the whole image, start-up alone made nearly all of .text resident (2.6 MB of 2.8 MB).
#
# The list holds symbol names with their hashes removed (crate disambiguators `Cs..._` and
# LLVM's `.N` suffixes), so that it survives rebuilds and toolchain updates; here they are
# matched against the symbols the objects being linked define. A name that matches nothing is
# skipped: a stale list costs resident memory, never correctness. Regenerate the list with
# packaging/startup-order.sh. VSM_LINK_CC names the C compiler driver (default cc);
# VSM_STARTUP_FUNCTIONS another list (tests).
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
list=${VSM_STARTUP_FUNCTIONS:-$here/startup-functions.txt}
cc=${VSM_LINK_CC:-cc}

objs=()
for arg in "$@"; do
	case $arg in
		*.o | *.a | *.rlib) [ -f "$arg" ] && objs+=("$arg") ;;
	esac
done

order=$(mktemp)
trap 'rm -f "$order"' EXIT
if [ -f "$list" ] && [ ${#objs[@]} -gt 0 ] && command -v nm >/dev/null 2>&1; then
	# POSIX nm format: NAME TYPE VALUE SIZE; keep defined functions.
	# nm fails on members without symbols (an rlib's metadata): its output is what counts.
	{ nm --defined-only -P "${objs[@]}" 2>/dev/null || true; } \
		| awk -v list="$list" '
			function norm(s) {
				gsub(/Cs[0-9A-Za-z]+_/, "C", s)
				sub(/\.[0-9]+$/, "", s)
				sub(/17h[0-9a-f]+E$/, "E", s)
				return s
			}
			$2 ~ /^[tTwW]$/ { k = norm($1); if (!(($1) in seen)) { seen[$1] = 1; have[k] = have[k] "\n" $1 } }
			END {
				while ((getline line < list) > 0) {
					if (line == "" || line ~ /^#/) continue
					if (line in have) printf "%s", substr(have[line], 2) "\n"
					# C names (musl, compiler builtins: from archives found through -l) as they are.
					else if (line !~ /^_(R|ZN)/) print line
				}
			}' >"$order"
	printf 'link-ordered.sh: %s start-up functions placed first\n' "$(wc -l <"$order" | tr -d ' ')" >&2
else
	printf 'link-ordered.sh: WARNING: no %s, no objects or no nm: linking without the start-up order\n' "$list" >&2
fi
[ -z "${VSM_LINK_ORDER_OUT:-}" ] || cp "$order" "$VSM_LINK_ORDER_OUT"
"$cc" "$@" -Wl,--symbol-ordering-file="$order" -Wl,--no-warn-symbol-ordering
