#!/usr/bin/env bash
# package-test.sh: build the release (scripts/release.sh), install the amd64
# Debian package on this machine, check what it installed, run the units'
# sandbox test and README's operator path (TestNetNSReadme) against the
# installed binaries and units, then purge it and
# check that nothing is left. scripts/test.sh runs it as its "package" step.
#
# Must run as root on a Debian machine without a tlsvpn package of its own
# (it refuses to touch one). The package is purged on every exit, failing
# or not. Env: OUT (default: a temporary directory) is where the release goes.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root "dpkg -i and the namespace test need root"
need_go
cd "$REPO_ROOT"

if dpkg-query -W -f='${Status}\n' tlsvpn 2>/dev/null | grep -q ' installed$'; then
	die "a tlsvpn package is already installed here; not replacing it (dpkg --purge tlsvpn first)"
fi
# The purge removes /var/lib/tlsvpn and /run/tlsvpn: never with another
# tunneld's leases or sockets in them.
for dir in /var/lib/tlsvpn /run/tlsvpn; do
	if [[ -d "$dir" ]] && [[ -n "$(ls -A "$dir")" ]]; then
		die "$dir is not empty (a tunneld not from the package keeps state there); the purge check would remove it"
	fi
done
for name in passwd group; do
	if getent "$name" tlsvpn >/dev/null; then
		die "a $name entry tlsvpn exists without the package; the purge check would remove it"
	fi
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tlsvpn-package.XXXXXX")"
OUT="${OUT:-$TMP/out}"
INSTALLED=
cleanup() {
	if [[ -n "$INSTALLED" ]]; then
		dpkg --purge tlsvpn >/dev/null 2>&1 || log "dpkg --purge tlsvpn failed"
	fi
	rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail=0
check() {
	local what="$1"
	shift
	if "$@"; then
		printf 'ok    %s\n' "$what"
	else
		printf 'FAIL  %s\n' "$what"
		fail=1
	fi
}

log "release build (amd64 and arm64)"
OUT="$OUT" bash scripts/release.sh
deb="$(ls "$OUT"/tlsvpn_*_amd64.deb)"
[[ -f "$(ls "$OUT"/tlsvpn_*_arm64.deb)" ]] || die "no arm64 package"
version="$(dpkg-deb -f "$deb" Version)"

log "dpkg -i $(basename "$deb")"
INSTALLED=1
dpkg -i "$deb"

check "tunneld --version names the package version" \
	grep -qx "tunneld $version" <(/usr/bin/tunneld --version | head -n 1)
check "tunnelc --version names the package version" \
	grep -qx "tunnelc $version" <(/usr/bin/tunnelc --version | head -n 1)
check "the binaries are static" \
	bash -c '! grep -q "/lib64/ld-linux\|/lib/ld-linux" /usr/bin/tunneld /usr/bin/tunnelc'
check "systemd-analyze verify accepts the installed units (binaries, man pages)" \
	systemd-analyze verify /lib/systemd/system/tunneld.service \
	/lib/systemd/system/tunneld@office.service /lib/systemd/system/tunnelc@work.service
check "man pages: tunneld(8), tunnelc(8)" \
	bash -c 'man -w 8 tunneld >/dev/null && man -w 8 tunnelc >/dev/null'
check "system user and group tlsvpn" \
	bash -c 'getent passwd tlsvpn | grep -q ":/usr/sbin/nologin$" && getent group tlsvpn >/dev/null'
check "/etc/tlsvpn, client/ and server/ are 0750 root:tlsvpn" \
	test "$(stat -c '%a %U:%G' /etc/tlsvpn /etc/tlsvpn/client /etc/tlsvpn/server | sort -u)" = "750 root:tlsvpn"
conffiles() { dpkg-query -W -f='${Conffiles}\n' tlsvpn | grep -q ' /etc/tlsvpn/tunneld.yaml.example '; }
check "example configs are conffiles" conffiles

log "the units' sandbox test and README's operator path against the installed package"
check "TestNetNSUnitSandbox with /usr/bin and /lib/systemd/system" \
	env TLSVPN_INSTALLED=1 go test -count=1 -run '^TestNetNSUnitSandbox$' ./cmd/tunneld
check "TestNetNSReadme: README's operator path, each command as written" \
	env TLSVPN_INSTALLED=1 go test -count=1 -run '^TestNetNSReadme$' ./cmd/tunneld

log "dpkg --purge tlsvpn"
files="$(dpkg-query -L tlsvpn | grep -E '^/(usr/bin|lib/systemd|usr/share/man|usr/share/doc/tlsvpn|etc/tlsvpn)/')"
dpkg --purge tlsvpn
INSTALLED=
left=()
# dpkg lists shared directories too (/lib/systemd/system): check the files.
while read -r f; do
	[[ -e "$f" && ! -d "$f" ]] && left+=("$f")
done <<<"$files"
for f in /etc/tlsvpn /var/lib/tlsvpn /run/tlsvpn /usr/share/doc/tlsvpn; do
	[[ -e "$f" ]] && left+=("$f")
done
check "purge removed every file (left: ${left[*]-none})" test "${#left[@]}" -eq 0
check "purge removed the user and group" \
	bash -c '! getent passwd tlsvpn >/dev/null && ! getent group tlsvpn >/dev/null'
gone() { ! dpkg-query -W -f='${Status}\n' tlsvpn 2>/dev/null | grep -q ' installed$'; }
check "dpkg no longer lists the package as installed" gone

[[ "$fail" -eq 0 ]] || die "package checks failed"
log "package checks passed"
