#!/usr/bin/env bash
# Build and run the container image's runtime stages with buildah and podman (Debian
# packages), as far as this machine allows, and check what the image promises.
#
# Usage: packaging/container/check.sh STATIC_BINARY
#
# What it can and cannot check here: no container registry is reachable from CI, so the base
# images of the "build" (rust) and "runtime-node" (debian) stages cannot be pulled. The
# "runtime" stage is FROM scratch and needs none: this script builds packaging/Dockerfile's
# "runtime" target with the "build" stage replaced by one that lays out the same /out tree
# from STATIC_BINARY (made by packaging/build-static.sh, as the build stage does), runs it
# with podman as the image says (non-root, volumes, the token as a mounted file, port 4000),
# and checks: the process runs as uid 10001, the HEALTHCHECK command passes, GET /api/v1/health
# and the status page answer on the published port, a request without the token is refused,
# and without the token file the container refuses to start. hadolint checks the whole file
# (tests/container.rs).
set -euo pipefail

bin="${1:?usage: check.sh STATIC_BINARY}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tag="localhost/vsm-daemon-check:$$"
name="vsm-daemon-check-$$"
tmp="$(mktemp -d)"
# How containers run on CI's machine (a container itself): vfs storage (no overlay support
# needed), runc (crun refuses its hybrid cgroup layout), rlimits set below the sandbox's own
# (it forbids setting them to podman's defaults or even to its current values), and no
# systemd for podman's healthcheck timers (the check is run by hand below).
podman=(podman --storage-driver vfs --runtime runc)
run=(run --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --health-interval disable)
buildah=(buildah --storage-driver vfs)
cleanup() {
  "${podman[@]}" rm -f -v "$name" "$name-notoken" >/dev/null 2>&1 || true
  "${podman[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "container check: FAILED: $*" >&2; "${podman[@]}" logs "$name" 2>&1 | tail -n 20 >&2 || true; exit 1; }

# The build context: the repository's Dockerfile with its build stage swapped for the host's
# static binary, laid out by the same commands.
mkdir -p "$tmp/ctx/out/usr/local/bin" "$tmp/ctx/out/etc/vsm-daemon" \
  "$tmp/ctx/out/var/lib" "$tmp/ctx/out/run" "$tmp/ctx/out/tmp" \
  "$tmp/ctx/vol/state" "$tmp/ctx/vol/socket"
install -m 0755 "$bin" "$tmp/ctx/out/usr/local/bin/vsm-daemon"
install -m 0644 "$ROOT/packaging/container/config.toml" "$tmp/ctx/out/etc/vsm-daemon/config.toml"
chmod 0700 "$tmp/ctx/vol/state" "$tmp/ctx/vol/socket"
chmod 1777 "$tmp/ctx/out/tmp"
printf 'vsm:x:10001:10001:vsm-daemon:/var/lib/vsm-daemon:/sbin/nologin\n' >"$tmp/ctx/out/etc/passwd"
printf 'vsm:x:10001:\n' >"$tmp/ctx/out/etc/group"
python3 - "$ROOT/packaging/Dockerfile" "$tmp/ctx/Dockerfile" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
start = text.index("FROM rust:")
end = text.index("# ----", start)
stage = "FROM scratch AS build\nCOPY out/ /out/\nCOPY vol/ /vol/\n\n"
open(sys.argv[2], "w").write(text[:start] + stage + text[end:])
PY
grep -q '^FROM scratch AS runtime$' "$tmp/ctx/Dockerfile" || fail "no runtime stage in the Dockerfile"

echo "container check: building the runtime target with buildah"
"${buildah[@]}" bud --quiet --layers=false --format docker --target runtime -t "$tag" \
  -f "$tmp/ctx/Dockerfile" "$tmp/ctx" >/dev/null || fail "buildah bud"

inspect="$("${podman[@]}" image inspect "$tag")"
python3 - "$inspect" <<'PY' || fail "image config: $inspect"
import json, sys
image = json.loads(sys.argv[1])[0]
c = image["Config"]
assert c.get("User") == "10001:10001", c.get("User")
assert "4000/tcp" in (c.get("ExposedPorts") or {}), c.get("ExposedPorts")
assert set(c.get("Volumes") or {}) == {"/var/lib/vsm-daemon", "/run/vsm-daemon"}, c.get("Volumes")
# podman shows the docker-format healthcheck beside Config.
hc = image.get("Healthcheck") or c.get("Healthcheck") or {}
assert hc.get("Test", [None])[1:] == ["/usr/local/bin/vsm-daemon", "health", "check"], hc
print("container check: image config ok (user 10001, port 4000, two volumes, healthcheck)")
PY

# Without the token file the daemon refuses to listen on 0.0.0.0 and says why.
set +e
out="$("${podman[@]}" "${run[@]}" --name "$name-notoken" --network host "$tag" start --config /etc/vsm-daemon/config.toml --listen 127.0.0.1:0 2>&1)"
code=$?
set -e
[ "$code" -ne 0 ] && grep -q 'api_token_file' <<<"$out" \
  || fail "started without its token file (exit $code): $out"

token="container-check-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" >"$tmp/token"
chmod 0444 "$tmp/token"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# Host networking: CI's sandbox may lack the bridge/iptables a published port needs; the
# container still listens on 0.0.0.0 as configured.
"${podman[@]}" "${run[@]}" -d --name "$name" --network host \
  -v "$tmp/token:/run/secrets/vsm-daemon-token:ro" \
  "$tag" start --config /etc/vsm-daemon/config.toml --listen "0.0.0.0:$port" >/dev/null \
  || fail "podman run"

ok=0
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ "$ok" -eq 1 ] || fail "GET /api/v1/health did not answer within 20 s"
"${podman[@]}" healthcheck run "$name" || fail "the HEALTHCHECK command failed"
uid="$("${podman[@]}" top "$name" huser | tail -n 1 | tr -d ' ')"
[ "$uid" = "10001" ] || fail "the daemon runs as $uid, not 10001"
# Read the whole page first: with pipefail, `curl | grep -q` fails whenever grep stops reading
# before curl has written everything (curl then exits 23 on the closed pipe).
page="$(curl -sf "http://127.0.0.1:$port/")" || fail "GET / failed"
grep -q '/ui/app.js' <<<"$page" || fail "no status page"
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/v1/status")"
[ "$code" = 401 ] || fail "GET /api/v1/status without the token answered $code"
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/status")"
[ "$code" = 200 ] || fail "GET /api/v1/status with the token answered $code"
"${podman[@]}" stop -t 10 "$name" >/dev/null || fail "podman stop"
exit_code="$("${podman[@]}" inspect "$name" --format '{{.State.ExitCode}}')"
[ "$exit_code" = 0 ] || fail "the daemon exited with $exit_code on SIGTERM"
echo "container check: ok (runtime image built and run; uid 10001, healthcheck, page, token, clean stop)"
