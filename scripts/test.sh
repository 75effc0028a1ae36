#!/usr/bin/env bash
# test.sh: run every check and test of the module, as CI does (.ci/run calls it).
#
#   static   gofmt, go vet (linux and darwin), staticcheck, shellcheck
#   tests    go test over ./..., with and without -race, including the
#            root/netns integration tests
#   fuzz     every Fuzz* target for a fixed number of inputs (FUZZ_EXECS, fewer
#            for the slow differential targets) or for FUZZTIME if set
#   bench    every benchmark once (-benchtime 1x) so they keep compiling
#   demo     scripts/demo.sh with a small transfer (TEST_DEMO=0 skips it)
#   load     scripts/load.sh: 200 sessions, churn and traffic, every session
#            must answer a ping and nothing may fail; then its floor scenario,
#            small and short, so it keeps working (TEST_LOAD=0 skips both)
#   package  scripts/package-test.sh: scripts/release.sh (amd64 and arm64),
#            dpkg -i of the amd64 package, --version, systemd-analyze verify
#            of the installed units, the units' sandbox test against the
#            installed files, dpkg --purge leaving nothing (TEST_PACKAGE=0
#            skips it)
#
# Must run as root: the namespace tests skip without it, and a skipped root test
# is a hole in CI. Keeps going after a failing step; ends with "N passed, N failed"
# and exits non-zero if any step failed.
#
# Env: FUZZ_EXECS (default 50000 inputs per target), FUZZTIME (a duration such as
# 1m or a count such as 200000x, for every target; unset by default), TEST_DEMO (default 1), DEMO_SIZE_MB (default 10 here),
# TEST_LOAD (default 1), TEST_PACKAGE (default 1).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Fuzz budgets are counts, not durations: go1.26's fuzz coordinator can report
# "context deadline exceeded" as a failure when a duration ends while a worker
# is mid-input on a busy machine (golang/go#75804, fixed in go1.27), which
# failed CI once with no failing input. A count has no deadline to race.
FUZZTIME="${FUZZTIME:-}"
FUZZ_EXECS="${FUZZ_EXECS:-50000}"
# fuzz_budget NAME: the -fuzztime for one target. The differential record-layer
# target runs two TLS stacks per input (about 600 inputs/s here, against
# 5,000-20,000 for the parsers), so it gets a twelfth of the count.
fuzz_budget() {
	if [[ -n "$FUZZTIME" ]]; then
		printf '%s\n' "$FUZZTIME"
		return
	fi
	case "$1" in
	FuzzRecordLayerMatchesStdlib) printf '%sx\n' $((FUZZ_EXECS / 12)) ;;
	*) printf '%sx\n' "$FUZZ_EXECS" ;;
	esac
}
TEST_DEMO="${TEST_DEMO:-1}"
TEST_LOAD="${TEST_LOAD:-1}"
TEST_PACKAGE="${TEST_PACKAGE:-1}"
STATICCHECK_VERSION=v0.8.2
# Two cores on CI: two packages at a time. -timeout bounds a hung test.
GOTEST=(go test -p 2 -timeout 12m)

trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

need_root "the netns integration tests need root and must not be skipped"
need_go
cd "$REPO_ROOT"

# ------------------------------------------------------------------ setup
# gcc + libc headers for -race (cgo); the rest are used by the integration
# tests, the demo and shellcheck; Squid, Dante, microsocks and nginx are the
# real proxies and web server of the network tests (openssl makes the web
# server's certificate), BIRD the real BGP router, etcd the real store of
# the fleet tests. apt runs only if something is missing.
ensure_cmds gcc:gcc /usr/include/stdlib.h:libc6-dev \
	ip:iproute2 ping:iputils-ping nft:nftables iperf3:iperf3 socat:socat \
	setsid:util-linux shellcheck:shellcheck python3:python3 \
	squid:squid nginx:nginx-light microsocks:microsocks danted:dante-server curl:curl \
	bird:bird2 birdc:bird2 openssl:openssl etcd:etcd-server
# The package step: dpkg-deb and dpkg build and install the .deb, useradd for
# its postinst, systemd-analyze verifies the units, man finds the man pages
# (verify checks Documentation=man:), setpriv and unshare emulate the units.
if [[ "$TEST_PACKAGE" == 1 ]]; then
	ensure_cmds dpkg-deb:dpkg useradd:passwd systemd-analyze:systemd man:man-db \
		gzip:gzip setpriv:util-linux unshare:util-linux
fi
go_mod_download
if ! staticcheck -version 2>/dev/null | grep -qF "(${STATICCHECK_VERSION#v})"; then
	log "installing staticcheck $STATICCHECK_VERSION"
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ||
		die "go install staticcheck@$STATICCHECK_VERSION failed"
fi

# ------------------------------------------------------------------ steps
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tlsvpn-test.XXXXXX")"
trap 'rm -rf -- "$WORK"' EXIT
SKIPPED=0
PASSED=()
FAILED=()
RESULTS=()

# run_step NAME CMD...: run CMD, record PASS/FAIL and how long it took.
run_step() {
	local name="$1" t0=$SECONDS rc=0
	shift
	printf '\n=== %s\n' "$name"
	"$@" || rc=$?
	if [[ "$rc" -eq 0 ]]; then
		PASSED+=("$name")
		RESULTS+=("$(printf 'PASS  %4ds  %s' $((SECONDS - t0)) "$name")")
	else
		FAILED+=("$name")
		RESULTS+=("$(printf 'FAIL  %4ds  %s (exit %d)' $((SECONDS - t0)) "$name" "$rc")")
		printf -- '--- FAIL: %s (exit %d)\n' "$name" "$rc"
	fi
}

step_gofmt() {
	local out
	out="$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 |
		xargs -0 -r gofmt -l)" || return 1
	if [[ -n "$out" ]]; then
		printf 'gofmt -l: not formatted (run gofmt -w):\n%s\n' "$out"
		return 1
	fi
}

step_shellcheck() {
	shellcheck -x scripts/*.sh .ci/run dist/debian/postinst dist/debian/prerm dist/debian/postrm
}

# step_gotest [FLAGS]: go test -v into a log, so skips are visible. Prints each
# package's result line, every SKIP with its reason, and the whole output
# (minus RUN/PASS chatter) of failing packages. A skip under root deserves a
# look: the root tests must not skip silently in CI.
# gotest_progress: filters go test -v output on stdin down to progress lines.
gotest_progress() {
	awk '
		/^(ok|FAIL|\?)[[:space:]]/ { print; fflush(); next }
		/^--- FAIL: / { print "  " $0; fflush(); next }
		/^--- PASS: / {
			t = $NF; gsub(/[()s]/, "", t)
			if (t + 0 >= 2) { print "  " $3 " " $NF; fflush() }
		}'
}

step_gotest() {
	local log rc=0 skips grc
	log="$(mktemp "$WORK/gotest.XXXXXX")"
	# Progress while it runs (the root integration tests take minutes): each
	# package as it ends, and each top-level test that failed or took 2 s or
	# more. The whole -v output stays in $log for the summaries below.
	{
		grc=0
		"${GOTEST[@]}" "$@" -count=1 -v ./... 2>&1 || grc=$?
		echo "$grc" >"$log.rc"
	} | tee "$log" | gotest_progress || true
	rc="$(cat "$log.rc")"
	skips="$(grep -B1 -E '^[[:space:]]*--- SKIP' "$log" | grep -vE '^(--$|=== )' || true)"
	if [[ -n "$skips" ]]; then
		SKIPPED=$((SKIPPED + $(grep -cE '^[[:space:]]*--- SKIP' <<<"$skips")))
		printf 'skipped tests:\n%s\n' "$skips"
	fi
	if [[ "$rc" -ne 0 ]]; then
		printf '\noutput of failing packages:\n'
		# -v output is contiguous per package and ends with its ok/FAIL/? line.
		awk '
			/^=== (RUN|PAUSE|CONT|NAME)/ || /^[[:space:]]*--- PASS/ { next }
			{ block = block $0 "\n" }
			/^(ok|\?)[[:space:]]/ { block = ""; next }
			/^FAIL[[:space:]]/ { printf "%s", block; block = "" }
			END { printf "%s", block }' "$log"
	fi
	return "$rc"
}

# fuzz_targets: prints "PKG NAME" for every fuzz target in the module.
fuzz_targets() {
	local out
	out="$(go test -list '^Fuzz' ./...)" || {
		printf '%s\n' "$out" >&2
		return 1
	}
	# -list prints a package's names, then its "ok  <pkg>" line.
	printf '%s\n' "$out" | awk '
		/^Fuzz/ { names[n++] = $1; next }
		/^ok[ \t]/ { for (i = 0; i < n; i++) print $2, names[i]; n = 0 }'
}

run_step "gofmt" step_gofmt
run_step "go vet (linux)" go vet ./...
run_step "go vet (darwin)" env GOOS=darwin go vet ./...
run_step "staticcheck" staticcheck ./...
run_step "shellcheck" step_shellcheck
# The namespace tests (TestNetNS*, cmd/tunneld) run the daemons as binaries
# built without the race detector, so under -race they would only check
# their own harness, twice the time: they run once, in the step after.
run_step "go test -race" step_gotest -race -skip '^TestNetNS'
# Again without -race: allocation tests skip under the race detector, and the
# non-race test binaries are built anyway for fuzz discovery and benchmarks.
run_step "go test (no race)" step_gotest

printf '\n=== fuzz: discover targets\n'
if targets="$(fuzz_targets)"; then
	if [[ -n "$targets" ]]; then
		printf '%s\n' "$targets"
	else
		echo "no fuzz targets found"
	fi
	while read -r pkg name; do
		[[ -n "$name" ]] || continue
		budget="$(fuzz_budget "$name")"
		run_step "fuzz ${pkg#tlsvpn/}.$name ($budget)" \
			"${GOTEST[@]}" -run '^$' -fuzz "^${name}\$" -fuzztime "$budget" "$pkg"
	done <<<"$targets"
else
	run_step "fuzz: discover targets" false
fi

run_step "benchmarks (1x)" "${GOTEST[@]}" -run '^$' -bench . -benchtime 1x ./...

if [[ "$TEST_DEMO" == 1 ]]; then
	run_step "demo (${DEMO_SIZE_MB:-10} MiB)" env DEMO_SIZE_MB="${DEMO_SIZE_MB:-10}" bash scripts/demo.sh
fi

if [[ "$TEST_LOAD" == 1 ]]; then
	run_step "load (200 sessions)" env LOAD_SCENARIO=hold LOAD_SESSIONS=200 LOAD_HOLD=5s LOAD_CHURN=10 \
		LOAD_TRAFFIC=2 LOAD_SOURCES=many LOAD_TIMEOUT=2m \
		LOAD_FLAGS="--ping-check --require-ping-all --max-failures 0" bash scripts/load.sh
	run_step "load floor (200 connections, short)" env LOAD_SCENARIO=floor LOAD_SESSIONS=200 LOAD_RATE=100 \
		LOAD_SOURCES=one FLOOR_EVERY=1s FLOOR_SETTLE=1s FLOOR_WINDOW=3s FLOOR_HS_WINDOW=3s bash scripts/load.sh
fi

if [[ "$TEST_PACKAGE" == 1 ]]; then
	run_step "package (release build, dpkg -i, units, purge)" bash scripts/package-test.sh
fi

# ------------------------------------------------------------------ summary
printf '\n=== summary\n'
printf '%s\n' "${RESULTS[@]}"
if [[ "$SKIPPED" -gt 0 ]]; then
	echo "note: $SKIPPED Go test(s) skipped; see the go test step"
fi
echo "${#PASSED[@]} passed, ${#FAILED[@]} failed"
[[ "${#FAILED[@]}" -eq 0 ]]
