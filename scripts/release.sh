#!/usr/bin/env bash
# release.sh: static, stripped tunneld and tunnelc for each architecture and
# a Debian package of each, in dist/out/:
#
#   dist/out/linux-ARCH/tunneld, tunnelc   CGO_ENABLED=0, -trimpath, -s -w
#   dist/out/tlsvpn_VERSION_ARCH.deb        binaries, systemd units, example
#                                           configs (docs/examples), man pages, copyright,
#                                           maintainer scripts (dist/debian)
#
# Env: VERSION (default: from git, e.g. 1.4.0 on tag v1.4.0, 1.4.0+3.g1a2b3c4d
# after it, 0.0.0+git20261205.1a2b3c4d without a tag; +dirty with uncommitted
# changes), ARCHES (default "amd64 arm64"), OUT (default dist/out).
# Needs go, git, dpkg-deb and gzip. The version is stamped into the binaries
# (-X tlsvpn/cmd/internal/cli.Version=...), so 'tunneld --version' names the
# package it came from.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_go
cd "$REPO_ROOT"
for cmd in git dpkg-deb gzip; do
	have "$cmd" || die "$cmd not found (apt-get install ${cmd/dpkg-deb/dpkg})"
done

ARCHES="${ARCHES:-amd64 arm64}"
OUT="${OUT:-dist/out}"

# git_version: a Debian-valid version (starts with a digit; no '-', which
# would split off a Debian revision) from the nearest v* tag and the commit.
git_version() {
	local desc dirty=""
	git diff --quiet HEAD -- 2>/dev/null || dirty="+dirty"
	if desc="$(git describe --tags --match 'v[0-9]*' --abbrev=8 HEAD 2>/dev/null)"; then
		# v1.4.0 or v1.4.0-3-g1a2b3c4d
		desc="${desc#v}"
		printf '%s%s\n' "$(sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/; s/-/~/g' <<<"$desc")" "$dirty"
		return
	fi
	printf '0.0.0+git%s.%s%s\n' "$(git log -1 --format=%cd --date=format:%Y%m%d)" \
		"$(git rev-parse --short=8 HEAD)" "$dirty"
}
VERSION="${VERSION:-$(git_version)}"
[[ "$VERSION" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] ||
	die "VERSION $VERSION: want a Debian version without '-', e.g. 1.4.0"
# Timestamps inside the package and the man pages' date: the commit's, so
# the same commit gives the same package.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
export SOURCE_DATE_EPOCH
DATE="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)"

log "version $VERSION, architectures: $ARCHES"
rm -rf -- "$OUT"
mkdir -p "$OUT"

build() {
	local arch="$1" dir="$OUT/linux-$1" prog
	mkdir -p "$dir"
	for prog in tunneld tunnelc; do
		log "building $prog for linux/$arch"
		CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath -buildvcs=true \
			-ldflags "-s -w -buildid= -X tlsvpn/cmd/internal/cli.Version=$VERSION" \
			-o "$dir/$prog" "./cmd/$prog"
	done
}

# manpages DIR: tunneld.8.gz and tunnelc.8.gz from the --help of binaries
# built for this machine (the help text is the same on every architecture).
manpages() {
	local dir="$1" bin prog
	bin="$(mktemp -d)"
	for prog in tunneld tunnelc; do
		go build -o "$bin/$prog" "./cmd/$prog"
		"$bin/$prog" --help |
			go run ./cmd/internal/manpage -name "$prog" -version "$VERSION" -date "$DATE" |
			gzip -9n >"$dir/$prog.8.gz"
	done
	rm -rf -- "$bin"
}

# copyright FILE: the package's copyright file, with the license of every
# Go module linked into the binaries, as the module cache has it.
copyright() {
	local file="$1" modcache mod ver lic
	modcache="$(go env GOMODCACHE)"
	{
		printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n'
		printf 'Upstream-Name: tlsvpn\n\n'
		printf 'Files: *\nCopyright: the tlsvpn authors\n'
		printf 'Comment: tunneld and tunnelc are statically linked Go programs; the\n'
		printf ' modules linked into them, and their licenses, follow.\n'
		go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{end}}{{end}}' \
			./cmd/tunneld ./cmd/tunnelc | sort -u |
			while read -r mod ver; do
				[[ -n "$mod" ]] || continue
				printf '\nFiles: (linked into the binaries) %s %s\n' "$mod" "$ver"
				lic="$(find "$modcache/$(go_escape "$mod")@$ver" -maxdepth 1 \( -iname 'LICEN[CS]E*' -o -iname 'COPYING*' \) 2>/dev/null | sort | head -n 1)"
				if [[ -n "$lic" ]]; then
					printf 'License: see below\n'
					sed -e 's/^$/./' -e 's/^/ /' "$lic"
				else
					printf 'License: see the module source\n'
				fi
			done
		printf '\nFiles: (linked into the binaries) the Go standard library %s\n' "$(go env GOVERSION)"
		printf 'License: BSD-3-Clause\n'
		sed -e 's/^$/./' -e 's/^/ /' "$(go env GOROOT)/LICENSE"
	} >"$file"
}

# go_escape PATH: the module cache's spelling of a module path (capital
# letters become '!' and the lower-case letter).
go_escape() {
	sed -E 's/([A-Z])/!\L\1/g' <<<"$1"
}

package() {
	local arch="$1" root
	root="$(mktemp -d)"
	chmod 0755 "$root"
	# shellcheck disable=SC2064 # expand now: root is local
	trap "rm -rf -- '$root'" RETURN
	install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
		"$root/usr/share/man/man8" "$root/usr/share/doc/tlsvpn"
	install -d -m 0750 "$root/etc/tlsvpn" "$root/etc/tlsvpn/client" "$root/etc/tlsvpn/server"
	install -m 0755 "$OUT/linux-$arch/tunneld" "$OUT/linux-$arch/tunnelc" "$root/usr/bin/"
	install -m 0644 dist/systemd/*.service "$root/lib/systemd/system/"
	# The examples that 'tunneld check' and 'tunnelc check' accept in their
	# tests (TestCheckExample).
	install -m 0644 docs/examples/tunneld.yaml "$root/etc/tlsvpn/tunneld.yaml.example"
	install -m 0644 docs/examples/tunnelc.yaml "$root/etc/tlsvpn/client/example.yaml.example"
	install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$root/DEBIAN/"
	cp "$MAN"/*.8.gz "$root/usr/share/man/man8/"
	copyright "$root/usr/share/doc/tlsvpn/copyright"
	chmod 0644 "$root/usr/share/man/man8/"*.gz "$root/usr/share/doc/tlsvpn/copyright"
	# Files under /etc are conffiles: an upgrade never overwrites one an
	# operator edited. Only examples are shipped there.
	printf '%s\n' /etc/tlsvpn/tunneld.yaml.example /etc/tlsvpn/client/example.yaml.example \
		>"$root/DEBIAN/conffiles"
	cat >"$root/DEBIAN/control" <<EOF
Package: tlsvpn
Version: $VERSION
Architecture: $arch
Maintainer: tlsvpn maintainers <tlsvpn@localhost>
Section: net
Priority: optional
Depends: passwd
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: VPN over one TLS 1.3 stream: server (tunneld) and client (tunnelc)
 tunneld accepts tunnelc clients over mutually authenticated TLS 1.3 and
 forwards IP packets between its TUN device and them; tunnelc connects, sets
 up the address and routes the server assigns, and carries packets.
 .
 Includes systemd units (tunneld.service, tunneld@.service, tunnelc@.service)
 that run the daemons as the user tlsvpn with CAP_NET_ADMIN only, example
 configuration files under /etc/tlsvpn, and man pages.
EOF
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group -Zxz --build "$root" "$OUT/tlsvpn_${VERSION}_${arch}.deb" >/dev/null
	# /etc/tlsvpn is root:tlsvpn 0750 once postinst has made the group.
	log "built $OUT/tlsvpn_${VERSION}_${arch}.deb"
}

for arch in $ARCHES; do
	build "$arch"
done
MAN="$(mktemp -d)"
trap 'rm -rf -- "$MAN"' EXIT
manpages "$MAN"
for arch in $ARCHES; do
	package "$arch"
done
ls -l "$OUT"/*.deb
