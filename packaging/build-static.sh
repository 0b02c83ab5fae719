#!/usr/bin/env bash
# Build the fully static release binary of vsm-daemon and verify it is static.
#
# Usage: packaging/build-static.sh          (from any directory)
# Progress and the size report go to stderr; stdout gets exactly one line,
# the absolute path of the binary, so both of these work:
#   bin=$(packaging/build-static.sh)
#   bin=$(packaging/build-static.sh | tail -n 1)
# Exits non-zero with a message if the build fails or the result is dynamic.
set -euo pipefail

die() {
	printf 'build-static.sh: error: %s\n' "$*" >&2
	exit 1
}

# Work from the repository root, wherever the script is called from.
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
cd "$repo_root"

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
command -v rustc >/dev/null 2>&1 || die "rustc not found on PATH"
command -v ldd >/dev/null 2>&1 || die "ldd not found on PATH (Debian package: libc-bin)"

host=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$host" ] || die "could not read the host triple from 'rustc -vV'"

# The C library. musl is the shipped build: about 0.9 MB smaller than glibc linked statically,
# a third less resident memory at idle, and the libc of OpenWrt-class hosts. It needs the Rust
# standard library for the musl target (rustup target add ARCH-unknown-linux-musl) and musl-gcc
# for ring's C code (Debian: musl-tools). Without them the script builds glibc with
# +crt-static and says so on stderr. VSM_STATIC_TARGET=TRIPLE picks a target outright.
musl=${host%%-*}-unknown-linux-musl
if [ -n "${VSM_STATIC_TARGET:-}" ]; then
	target=$VSM_STATIC_TARGET
elif [ -d "$(rustc --print sysroot)/lib/rustlib/$musl/lib" ] && command -v musl-gcc >/dev/null 2>&1; then
	target=$musl
else
	target=$host
	printf 'build-static.sh: WARNING: no Rust standard library for %s or no musl-gcc: building glibc with +crt-static (larger); install them with: rustup target add %s; apt-get install musl-tools\n' "$musl" "$musl" >&2
fi

# The standard library. rustup ships std prebuilt for speed, with unwinding and a panic
# message formatter the daemon does not need (its release profile aborts on panic). For the
# musl target, when the toolchain has std's source (rustup component add rust-src) and its
# rustc knows the immediate-abort panic strategy, std is compiled with the daemon instead
# (-Zbuild-std) and:
# - panic = immediate-abort: a panic is a trap instruction, without formatting a message or
#   running a hook (the daemon prints one line on SIGILL naming the image address, which
#   the symbols kept in static/vsm-daemon.sym resolve);
# - -Zlocation-detail=none: no file/line/column strings for panics;
# - std's optimize_for_size feature: its smaller implementations of sorting, integer
#   formatting, float parsing and the like (same results; std's only default feature,
#   panic-unwind, is of no use with immediate-abort);
# - -Cforce-unwind-tables=no: nothing unwinds any more, so no .eh_frame (a core dump's
#   backtrace then stops at the trapping function; the SIGILL line still names it);
# - LLVM's machine outliner (-C llvm-args=-enable-machine-outliner=always): instruction
#   sequences repeated across functions become one shared function each, 3.5 % of the
#   binary (3,575,624 -> 3,451,304 bytes on 2026-12-02); on by default at -Oz for AArch64,
#   opt-in for x86_64. Outlined code has no unwind info, which this build has none of anyway.
#   .ci/run runs the whole integration suite against the binary this makes (VSM_TEST_BIN);
# - -z pack-relative-relocs: the static-pie's relative relocations as DT_RELR (musl 1.2.4+
#   applies them), 1 kB instead of 92 kB; ASLR and RELRO stay;
# - linked by the toolchain's own lld through packaging/link-ordered.sh, which puts the
#   functions run from start-up to idle (packaging/startup-functions.txt) together: the
#   kernel maps pages around each fault, so spread out they made all of .text resident
#   (idle RSS 3.4 MiB; together, 1.5 MiB).
# Together about 1.3 MB less binary (README, "Size with TLS").
# These are unstable flags: on a stable toolchain RUSTC_BOOTSTRAP=1 enables them for this
# build only (as the Linux kernel does for its Rust), so the compiler stays the pinned stable
# one rather than a nightly of the day. Where they are not available the script builds with
# the prebuilt std and says so loudly. VSM_STATIC_STD=prebuilt picks that build outright.
# The binary is static/vsm-daemon under the release dir, its symbols static/vsm-daemon.sym.
# The std build gets its own target dir (size-std/) so that it and a plain
# `cargo build --release` do not rebuild each other. The glibc fallback keeps the prebuilt
# std (the size build was measured with musl only).
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
case $target_dir in
	/*) ;;
	*) target_dir=$repo_root/$target_dir ;;
esac
std_src=$(rustc --print sysroot)/lib/rustlib/src/rust/library/Cargo.lock
size_flags=(-Z unstable-options -C panic=immediate-abort -Z location-detail=none
	-C force-unwind-tables=no -C llvm-args=-enable-machine-outliner=always
	-C link-arg=-Wl,-z,pack-relative-relocs
	-C linker-features=+lld -C link-self-contained=+linker)
std_build=
if [ "${VSM_STATIC_STD:-}" = prebuilt ]; then
	printf 'build-static.sh: VSM_STATIC_STD=prebuilt: using the prebuilt standard library\n' >&2
elif [ "$target" != "$musl" ]; then
	printf 'build-static.sh: WARNING: ******** %s: building with the prebuilt standard library (the size build is for musl) ********\n' "$target" >&2
elif [ ! -f "$std_src" ]; then
	printf 'build-static.sh: WARNING: ******** no std source for this toolchain (%s missing): building with the prebuilt standard library, about 1.2 MB larger; install it with: rustup component add rust-src ********\n' "$std_src" >&2
elif ! RUSTC_BOOTSTRAP=1 rustc "${size_flags[@]}" --target "$target" --print cfg 2>/dev/null \
	| grep -qx 'panic="immediate-abort"'; then
	printf 'build-static.sh: WARNING: ******** %s does not take "%s": building with the prebuilt standard library, about 1.2 MB larger ********\n' "$(rustc -V)" "${size_flags[*]}" >&2
else
	std_build=1
fi

# +crt-static links the C runtime statically (musl's default; glibc needs it). The explicit
# --target (even when it equals the host) makes cargo apply RUSTFLAGS to target artifacts
# only: proc-macros and build scripts are then built without crt-static and stay dynamic,
# which they must be for rustc to load them.
# Any RUSTFLAGS already in the environment are kept.
flags="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
if [ -n "$std_build" ]; then
	printf 'build-static.sh: building %s release for %s with std built for size\n' "vsm-daemon" "$target" >&2
	target_dir=$target_dir/size-std
	linker_var=CARGO_TARGET_$(printf '%s' "$target" | tr 'a-z.-' 'A-Z__')_LINKER
	export "$linker_var=$script_dir/link-ordered.sh"
	# Linked with its symbols, stripped below: the symbols stay beside the binary (.sym), so
	# that the address in the SIGILL line resolves against exactly the shipped code
	# (gdb -batch -ex 'info symbol ADDR' vsm-daemon.sym).
	CARGO_PROFILE_RELEASE_STRIP=false RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags ${size_flags[*]}" \
		cargo build --release --locked --target "$target" --target-dir "$target_dir" \
		-Z build-std=std,panic_abort -Z build-std-features=optimize_for_size >&2 \
		|| die "cargo build failed"
	command -v strip >/dev/null 2>&1 || die "strip not found on PATH (Debian package: binutils)"
	linked=$target_dir/$target/release/vsm-daemon
	mkdir -p "$target_dir/$target/release/static"
	cp "$linked" "$target_dir/$target/release/static/vsm-daemon.sym"
	strip -o "$target_dir/$target/release/static/vsm-daemon" "$linked" \
		|| die "strip $linked failed"
else
	printf 'build-static.sh: building %s release for %s\n' "vsm-daemon" "$target" >&2
	RUSTFLAGS="$flags" \
		cargo build --release --locked --target "$target" --target-dir "$target_dir" >&2 \
		|| die "cargo build failed"
fi

bin=$target_dir/$target/release/vsm-daemon
[ -z "$std_build" ] || bin=$target_dir/$target/release/static/vsm-daemon
[ -f "$bin" ] || die "build succeeded but $bin does not exist"

# glibc's ldd prints "not a dynamic executable" (and exits 1) for a static
# non-PIE binary and "statically linked" for a static-pie one; anything else
# (a list of shared libraries) means the link is dynamic.
ldd_out=$(ldd "$bin" 2>&1) || true
case $ldd_out in
	*"not a dynamic executable"* | *"statically linked"*) ;;
	*)
		printf '%s\n' "$ldd_out" >&2
		die "$bin is dynamically linked (see ldd output above)"
		;;
esac

# The binary must run (a libc that ignored DT_RELR, say, would crash here): when it is for
# this machine's architecture, ask it its version.
case $target in
	"${host%%-*}"-*)
		"$bin" --version >/dev/null 2>&1 || die "$bin was built but does not run ('$bin --version' failed)"
		;;
esac

size=$(wc -c <"$bin" | tr -d '[:space:]')
printf 'build-static.sh: ok: static binary, %s bytes: %s\n' "$size" "$bin" >&2
printf '%s\n' "$bin"
