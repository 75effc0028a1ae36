# shellcheck shell=bash
# Shared helpers for scripts/demo.sh and scripts/test.sh. Source it; do not run it.
#
# Conventions: messages go to stderr, prefixed with the script name; functions
# return non-zero instead of exiting unless their name says "die"/"need".

if [[ -n "${_TLSVPN_LIB_SH:-}" ]]; then
	return 0
fi
_TLSVPN_LIB_SH=1

# REPO_ROOT is the module root, derived from this file's path so callers work from any cwd.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PROG="$(basename "${0:-script}" .sh)"

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: FAIL: %s\n' "$PROG" "$*" >&2
	exit 1
}

need_root() {
	if [[ "$(id -u)" -ne 0 ]]; then
		die "must run as root ($1); try: sudo $0"
	fi
}

need_go() {
	command -v go >/dev/null 2>&1 ||
		{ [[ -x /usr/local/go/bin/go ]] && PATH="/usr/local/go/bin:$PATH"; } ||
		die "go not found in PATH (expected a Go toolchain, e.g. /usr/local/go/bin/go)"
	local gopath
	gopath="$(go env GOPATH)" || die "go env GOPATH failed"
	case ":$PATH:" in
	*":$gopath/bin:"*) ;;
	*) PATH="$PATH:$gopath/bin" ;;
	esac
	export PATH
}

# have CMD: CMD is in PATH, or, if it contains a '/', the file exists.
have() {
	case "$1" in
	*/*) [[ -e "$1" ]] ;;
	*) command -v "$1" >/dev/null 2>&1 ;;
	esac
}

# ensure_cmds CMD:PACKAGE...
# Installs the Debian package for every CMD that is missing (see have). Runs apt-get
# update at most once per process and only when something is missing, so
# repeated runs on a prepared machine do not touch the network.
_APT_UPDATED=
ensure_cmds() {
	local spec cmd pkg missing=()
	for spec in "$@"; do
		cmd="${spec%%:*}"
		pkg="${spec#*:}"
		if ! have "$cmd"; then
			case " ${missing[*]-} " in
			*" $pkg "*) ;;
			*) missing+=("$pkg") ;;
			esac
		fi
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	command -v apt-get >/dev/null 2>&1 ||
		die "missing packages ${missing[*]} and no apt-get to install them"
	log "installing: ${missing[*]}"
	# Another apt run (unattended-upgrades, a parallel session) may hold the
	# lock: wait for it instead of failing.
	local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
	if [[ -z "$_APT_UPDATED" ]]; then
		DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >/dev/null ||
			die "apt-get update failed"
		_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
		"${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
	for spec in "$@"; do
		have "${spec%%:*}" ||
			die "${spec%%:*} still missing after installing ${spec#*:}"
	done
}

go_mod_download() {
	local out
	out="$(cd "$REPO_ROOT" && go mod download 2>&1)" || {
		printf '%s\n' "$out" >&2
		die "go mod download failed"
	}
}

# kill_wait PID [SECONDS]: SIGTERM, wait up to SECONDS (default 10) for exit,
# then SIGKILL. Only for processes this script started. Returns the exit status
# of the process when it is our child, 0 otherwise.
kill_wait() {
	local pid="$1" secs="${2:-10}" i rc=0
	[[ -n "$pid" ]] || return 0
	kill -0 "$pid" 2>/dev/null || {
		wait "$pid" 2>/dev/null || rc=$?
		return "$rc"
	}
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid did not exit within ${secs}s of SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		rc=137
	fi
	wait "$pid" 2>/dev/null || rc=$?
	return "$rc"
}

# netns_kill_all NS: SIGKILL whatever still runs inside namespace NS. Only used
# on namespaces this script created, so everything in them is ours.
netns_kill_all() {
	local ns="$1" pids
	pids="$(ip netns pids "$ns" 2>/dev/null)" || return 0
	[[ -n "$pids" ]] || return 0
	# shellcheck disable=SC2086 # word splitting of the PID list is intended
	kill -KILL $pids 2>/dev/null || true
}

# netns_delete NS: kill what runs inside NS, then remove it (and its devices).
netns_delete() {
	local ns="$1" i
	ip netns list 2>/dev/null | grep -qw -- "$ns" || return 0
	netns_kill_all "$ns"
	for ((i = 0; i < 20; i++)); do
		ip netns del "$ns" 2>/dev/null && return 0
		sleep 0.1
	done
	log "could not delete netns $ns"
	return 1
}

# wait_until SECONDS CMD...: run CMD every 0.1s until it succeeds; 1 on timeout.
wait_until() {
	local secs="$1" i
	shift
	for ((i = 0; i < secs * 10; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	"$@"
}

# slog_value KEY FILE [MSG]: print the value of KEY from the last log/slog text
# line in FILE whose msg is MSG (any line if MSG is empty). Handles both
# key=value and key="quoted value" (slog quotes values with spaces or '=').
slog_value() {
	local key="$1" file="$2" msg="${3:-}" line
	if [[ -n "$msg" ]]; then
		line="$(grep -E "(^|[[:space:]])msg=\"?${msg}\"?([[:space:]]|$)" "$file" | tail -n 1)"
	else
		line="$(tail -n 1 "$file")"
	fi
	[[ -n "$line" ]] || return 1
	printf '%s\n' "$line" | sed -n \
		-e "s/^\(.*[[:space:]]\)\{0,1\}${key}=\"\(\([^\"\\\\]\|\\\\.\)*\)\".*/\2/p" \
		-e 't' \
		-e "s/^\(.*[[:space:]]\)\{0,1\}${key}=\([^[:space:]\"][^[:space:]]*\).*/\2/p" |
		sed 's/\\"/"/g; s/\\\\/\\/g'
}
