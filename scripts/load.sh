#!/usr/bin/env bash
# load.sh: run tlsvpn-load (cmd/tlsvpn-load) against a real tunneld, each in a
# throwaway network namespace joined by a veth pair, and print the load
# generator's report and a summary of tunneld's log.
#
# Usage: sudo scripts/load.sh        (from any directory; small and quick by default)
#
# Scenarios (LOAD_SCENARIO):
#   hold     ramp up LOAD_SESSIONS sessions, hold them LOAD_HOLD with optional
#            churn and traffic, close them all (default)
#   restart  ramp up, hold LOAD_RESTART_AFTER seconds, kill -9 tunneld, start
#            it again (same leases), and measure how long until every session
#            is back; the load generator reconnects like tunnelc (backoff from
#            250 ms doubling to 30 s, each wait half to one and a half times that) and ends 2 s after recovery
#   floor    no tunneld: the floor of Go's runtime and crypto/tls on this
#            machine ('tlsvpn-load floor'): LOAD_SESSIONS idle connections
#            with one PING-sized message each way every FLOOR_EVERY, on plain
#            TCP and on TLS 1.3, then full handshakes with tunneld's TLS
#            settings as fast as LOAD_CONCURRENCY allows, at LOAD_RATE (if
#            set), and resumed; run it beside a hold to see what tunneld adds
#   connect  tunneld, and the floor's lean client speaking tlsvpn (TLS 1.3,
#            HELLO, CONFIG, CLOSE) from the LOAD_SOURCES addresses: new
#            connections as fast as LOAD_CONCURRENCY allows, at LOAD_RATE (if
#            set), and resumed, each for FLOOR_HS_WINDOW (LOAD_SESSIONS
#            client certificates in turn); tunneld's CPU per connect and
#            connect-to-CONFIG latency, with CONNECT_HELD sessions held
#            meanwhile by tlsvpn-load (none by default)
#
# Env (defaults in brackets):
#   LOAD_SESSIONS      held sessions [200]
#   LOAD_RATE          new connections per second in the ramp, 0 = as fast as
#                      LOAD_CONCURRENCY allows [0]
#   LOAD_CONCURRENCY   handshakes in flight at most [32]
#   LOAD_HOLD          hold duration, a Go duration [10s; restart: 120s, an upper bound]
#   LOAD_CHURN         sessions that connect, live LOAD_CHURN_LIFE, close and
#                      reconnect during the hold [0]
#   LOAD_CHURN_LIFE    [1s]
#   LOAD_TRAFFIC       DATA packets per second per held session [0]
#   LOAD_SOURCES       one: every session from one address ("an office NAT");
#                      many: one address per session, at most 4094 ("many users");
#                      N: N addresses from 198.19.0.0/16 [many]
#   LOAD_RESUME        1: reconnect with TLS session tickets [0]
#   LOAD_RECONNECT     1: failed and lost sessions reconnect like tunnelc [1]
#   LOAD_RESTART_AFTER seconds between the ramp's end and kill -9 (restart) [3]
#   LOAD_TIMEOUT       bound on the load generator, Ns, Nm or Nh [10m]
#   LOAD_FLAGS         more tlsvpn-load flags, e.g. "--ping-check --require-ping-all
#                      --max-failures 0" (see go run ./cmd/tlsvpn-load --help)
#   LOAD_JSON          copy the JSON report to this file
#   LOAD_NOFILE        descriptor limit (soft and hard) for both processes [262144]
#   TUNNEL_FLAGS_SERVER  more tunneld flags, after the script's own, so they win:
#                      e.g. "--handshake-rate -1 --max-handshakes 256"
#   KEEP_LOGS          1: keep the temporary directory (binaries, PKI, logs, JSON)
#   FLOOR_EVERY        floor: message interval per idle connection [15s]
#   FLOOR_SETTLE       floor: wait after the ramp before measuring [20s]
#   FLOOR_WINDOW       floor: measured window of each idle test [60s]
#   FLOOR_HS_WINDOW    floor, connect: measured window of each handshake test [20s]
#   CONNECT_HELD       connect: sessions tlsvpn-load opens first and holds while
#                      the new connections are measured [0]
#
# The server runs with a 100.64.0.0/16 tunnel subnet, --max-clients of the
# sessions plus churn plus 64, and its default per-source and handshake
# limits unless TUNNEL_FLAGS_SERVER changes them: refusals are part of what a
# run shows, counted by reason in the report. Exit status: the load
# generator's (1 when a --require-* or --max-failures check failed).
#
# A 10,000-session run:
#   LOAD_SESSIONS=10000 LOAD_HOLD=60s LOAD_CHURN=100 LOAD_RESUME=1 \
#     LOAD_FLAGS="--ping-check" LOAD_JSON=/tmp/load-10k.json sudo -E scripts/load.sh
#
# Everything it creates (namespaces, veth, TUN devices, processes, temp dir)
# is removed on exit, failure, Ctrl-C or SIGTERM; processes are stopped by the
# PIDs it started. Traffic stays inside the two namespaces: underlay
# 198.18.0.0/30 and sources in 198.19.0.0/16, tunnel 100.64.0.0/16.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOAD_SCENARIO="${LOAD_SCENARIO:-hold}"
LOAD_SESSIONS="${LOAD_SESSIONS:-200}"
LOAD_RATE="${LOAD_RATE:-0}"
LOAD_CONCURRENCY="${LOAD_CONCURRENCY:-32}"
LOAD_CHURN="${LOAD_CHURN:-0}"
LOAD_CHURN_LIFE="${LOAD_CHURN_LIFE:-1s}"
LOAD_TRAFFIC="${LOAD_TRAFFIC:-0}"
LOAD_SOURCES="${LOAD_SOURCES:-many}"
LOAD_RESUME="${LOAD_RESUME:-0}"
LOAD_RECONNECT="${LOAD_RECONNECT:-1}"
LOAD_RESTART_AFTER="${LOAD_RESTART_AFTER:-3}"
LOAD_TIMEOUT="${LOAD_TIMEOUT:-10m}"
LOAD_FLAGS="${LOAD_FLAGS:-}"
LOAD_JSON="${LOAD_JSON:-}"
LOAD_NOFILE="${LOAD_NOFILE:-262144}"
TUNNEL_FLAGS_SERVER="${TUNNEL_FLAGS_SERVER:-}"
KEEP_LOGS="${KEEP_LOGS:-0}"
FLOOR_EVERY="${FLOOR_EVERY:-15s}"
FLOOR_SETTLE="${FLOOR_SETTLE:-20s}"
FLOOR_WINDOW="${FLOOR_WINDOW:-60s}"
FLOOR_HS_WINDOW="${FLOOR_HS_WINDOW:-20s}"
CONNECT_HELD="${CONNECT_HELD:-0}"
case "$LOAD_SCENARIO" in
hold | floor | connect) LOAD_HOLD="${LOAD_HOLD:-10s}" ;;
restart) LOAD_HOLD="${LOAD_HOLD:-120s}" ;;
*) die "LOAD_SCENARIO must be hold, restart, floor or connect, got '$LOAD_SCENARIO'" ;;
esac

SERVER_UL=198.18.0.1
CLIENT_UL=198.18.0.2
SOURCE_NET=198.19.0.0/16
SUBNET=100.64.0.0/16
PORT=443
METRICS_PORT=9100
SRV_TUN=tlsload0
MANY_MAX=4094

NS_SRV="tlsload-srv-$$"
NS_CLI="tlsload-cli-$$"

TMP=""
SRV_PID=""
PLAIN_PID=""
HELD_PID=""
LOAD_PID=""
REPORT_SHOWN=0

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_num() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
is_uint "$LOAD_SESSIONS" || die "LOAD_SESSIONS must be a number, got '$LOAD_SESSIONS'"
is_uint "$LOAD_CHURN" || die "LOAD_CHURN must be a number, got '$LOAD_CHURN'"
if ! is_uint "$LOAD_CONCURRENCY" || ((LOAD_CONCURRENCY == 0)); then
	die "LOAD_CONCURRENCY must be a positive number, got '$LOAD_CONCURRENCY'"
fi
is_num "$LOAD_RATE" || die "LOAD_RATE must be a number, got '$LOAD_RATE'"
is_num "$LOAD_TRAFFIC" || die "LOAD_TRAFFIC must be a number, got '$LOAD_TRAFFIC'"
is_uint "$LOAD_RESTART_AFTER" || die "LOAD_RESTART_AFTER must be whole seconds, got '$LOAD_RESTART_AFTER'"
is_uint "$LOAD_NOFILE" || die "LOAD_NOFILE must be a number, got '$LOAD_NOFILE'"
((LOAD_SESSIONS + LOAD_CHURN > 0)) || die "nothing to do: LOAD_SESSIONS and LOAD_CHURN are both 0"
[[ "$LOAD_SCENARIO" != restart ]] || ((LOAD_SESSIONS > 0)) || die "the restart scenario needs LOAD_SESSIONS > 0"
case "$LOAD_TIMEOUT" in
*s) TIMEOUT_S="${LOAD_TIMEOUT%s}" ;;
*m) TIMEOUT_S="$((${LOAD_TIMEOUT%m} * 60))" ;;
*h) TIMEOUT_S="$((${LOAD_TIMEOUT%h} * 3600))" ;;
*) TIMEOUT_S="" ;;
esac
is_uint "$TIMEOUT_S" || die "LOAD_TIMEOUT must be like 600s, 10m or 1h, got '$LOAD_TIMEOUT'"
is_uint "$CONNECT_HELD" || die "CONNECT_HELD must be a number, got '$CONNECT_HELD'"
[[ "$CONNECT_HELD" == 0 || "$LOAD_SCENARIO" == connect ]] || die "CONNECT_HELD is for LOAD_SCENARIO=connect"
IDENTITIES=$((LOAD_SESSIONS + LOAD_CHURN + CONNECT_HELD))
case "$LOAD_SOURCES" in
one) NSOURCES=0 ;;
many) NSOURCES=$((IDENTITIES < MANY_MAX ? IDENTITIES : MANY_MAX)) ;;
*)
	if ! is_uint "$LOAD_SOURCES" || ((LOAD_SOURCES < 1 || LOAD_SOURCES > 65534)); then
		die "LOAD_SOURCES must be one, many or a number 1..65534, got '$LOAD_SOURCES'"
	fi
	NSOURCES="$LOAD_SOURCES"
	;;
esac
read -r -a SERVER_EXTRA <<<"$TUNNEL_FLAGS_SERVER"
read -r -a LOAD_EXTRA <<<"$LOAD_FLAGS"

step() { printf '==> %s\n' "$*" >&2; }

show_server_log() {
	[[ -n "$TMP" && -s "$TMP/tunneld.log" ]] || return 0
	printf -- '--- tunneld.log (last 30 lines) ---\n' >&2
	tail -n 30 "$TMP/tunneld.log" >&2
}

fail() {
	show_server_log
	die "$@"
}

cleanup() {
	local rc=$?
	set +e
	trap '' INT TERM # finish cleaning even if Ctrl-C is pressed again
	kill_wait "$LOAD_PID" 15 >/dev/null 2>&1
	# An interrupted generator still writes what it measured so far.
	if [[ "$REPORT_SHOWN" == 0 && -n "$TMP" && -s "$TMP/report.txt" ]]; then
		cat "$TMP/report.txt"
	fi
	kill_wait "$SRV_PID" 10 >/dev/null 2>&1
	kill_wait "$PLAIN_PID" 10 >/dev/null 2>&1
	kill_wait "$HELD_PID" 15 >/dev/null 2>&1
	netns_delete "$NS_CLI"
	netns_delete "$NS_SRV"
	if [[ -n "$TMP" && -d "$TMP" ]]; then
		if [[ "$KEEP_LOGS" == 1 ]]; then
			log "kept $TMP"
		else
			rm -rf -- "$TMP"
		fi
	fi
	if [[ "$rc" -ne 0 ]]; then
		log "exit $rc; cleaned up"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# ------------------------------------------------------------------ setup
need_root "it creates network namespaces and TUN devices"
need_go
ensure_cmds ip:iproute2 ss:iproute2 ping:iputils-ping setsid:util-linux sysctl:procps awk:mawk
[[ -c /dev/net/tun ]] || die "/dev/net/tun missing (load the tun module: modprobe tun)"

# Every session is a descriptor on both sides, and both processes inherit
# this shell's limit. Raising the hard limit needs CAP_SYS_RESOURCE, which a
# container's root may lack; the soft limit can always go up to the hard one.
if ulimit -Hn "$LOAD_NOFILE" 2>/dev/null && ulimit -Sn "$LOAD_NOFILE" 2>/dev/null; then
	log "descriptor limit $LOAD_NOFILE for tunneld and tlsvpn-load"
else
	ulimit -Sn "$(ulimit -Hn)"
	log "descriptor limit $(ulimit -Sn) for tunneld and tlsvpn-load (the hard limit; raising it to $LOAD_NOFILE needs CAP_SYS_RESOURCE)"
fi
if (($(ulimit -Sn) < IDENTITIES + 128)); then
	log "WARNING: $IDENTITIES sessions need more than $(ulimit -Sn) descriptors: expect EMFILE failures"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tlsvpn-load.XXXXXX")"
cd "$REPO_ROOT"

step "build tunneld, tlsvpn-load"
go_mod_download
go build -o "$TMP/tunneld" ./cmd/tunneld || die "go build ./cmd/tunneld failed"
go build -o "$TMP/tlsvpn-load" ./cmd/tlsvpn-load || die "go build ./cmd/tlsvpn-load failed"

step "PKI: CA and server certificate (IP $SERVER_UL); client certificates are minted in memory"
PKI="$TMP/pki"
pki() {
	"$TMP/tunneld" pki "$@" >>"$TMP/pki.log" 2>&1 || {
		cat "$TMP/pki.log" >&2
		die "tunneld pki $* failed"
	}
}
pki init --dir "$PKI"
pki issue --dir "$PKI" --server --name server --ip "$SERVER_UL"

step "namespaces $NS_CLI ($CLIENT_UL) <-veth-> $NS_SRV ($SERVER_UL)"
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip link add veth0 netns "$NS_CLI" type veth peer name veth0 netns "$NS_SRV"
ip -n "$NS_CLI" addr add "$CLIENT_UL/30" dev veth0
ip -n "$NS_SRV" addr add "$SERVER_UL/30" dev veth0
for ns in "$NS_CLI" "$NS_SRV"; do
	ip -n "$ns" link set lo up
	ip -n "$ns" link set veth0 up
done
# The whole local port range for the load generator (per namespace): every
# session is a connection to the same server port. The server's namespace
# keeps the kernel's defaults, which its listen backlog depends on.
ip netns exec "$NS_CLI" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
log "server namespace: net.core.somaxconn $(ip netns exec "$NS_SRV" sysctl -n net.core.somaxconn), net.ipv4.tcp_max_syn_backlog $(ip netns exec "$NS_SRV" sysctl -n net.ipv4.tcp_max_syn_backlog)"
SOURCE_FLAG=()
if ((NSOURCES > 0)); then
	# Addresses 198.19.0.1 upwards, in the order tlsvpn-load's
	# --source 198.19.0.0/16:N takes them. The server routes the /16 back
	# through the client's veth address, so it needs one neighbour entry,
	# not one per source.
	awk -v n="$NSOURCES" 'BEGIN { for (i = 1; i <= n; i++) printf "address add 198.19.%d.%d/32 dev veth0\n", int(i / 256), i % 256 }' \
		>"$TMP/sources.batch"
	ip -n "$NS_CLI" -batch "$TMP/sources.batch" || die "adding $NSOURCES source addresses failed"
	ip -n "$NS_SRV" route add "$SOURCE_NET" via "$CLIENT_UL" dev veth0
	SOURCE_FLAG=(--source "$SOURCE_NET:$NSOURCES")
	LAST_SOURCE="$(awk -v i="$NSOURCES" 'BEGIN { printf "198.19.%d.%d", int(i / 256), i % 256 }')"
	for src in 198.19.0.1 "$LAST_SOURCE"; do
		ip netns exec "$NS_CLI" ping -q -c 1 -W 2 -I "$src" "$SERVER_UL" >/dev/null ||
			die "the server does not answer source address $src"
	done
	log "$NSOURCES source addresses 198.19.0.1 .. $LAST_SOURCE on the client's veth"
else
	SOURCE_FLAG=(--source "$CLIENT_UL")
	log "one source address: $CLIENT_UL"
fi
ip netns exec "$NS_CLI" ping -q -c 1 -W 2 "$SERVER_UL" >/dev/null || die "veth: $CLIENT_UL cannot reach $SERVER_UL"

# ------------------------------------------------------------------ floor
# run_floor: two floor servers (TLS on $PORT, plain TCP on PLAIN_PORT) in
# the server namespace, and one floor client after another in the client's.
# Each client prints its own lines; nothing of tunneld runs.
PLAIN_PORT=444
floor_up() {
	ip netns exec "$NS_SRV" ss -Hltn "sport = :$PORT" | grep -q . &&
		ip netns exec "$NS_SRV" ss -Hltn "sport = :$PLAIN_PORT" | grep -q .
}
floor_client() {
	local pid="$1"
	shift
	ip netns exec "$NS_CLI" setsid "$TMP/tlsvpn-load" floor "$@" --server-pid "$pid" --pki "$PKI" >>"$TMP/report.txt" &
	LOAD_PID=$!
	wait "$LOAD_PID" || fail "tlsvpn-load floor $* failed"
	LOAD_PID=""
}
run_floor() {
	step "floor servers in $NS_SRV: TLS 1.3 on :$PORT, plain TCP on :$PLAIN_PORT"
	ip netns exec "$NS_SRV" setsid "$TMP/tlsvpn-load" floor server --listen "$SERVER_UL:$PORT" --pki "$PKI" >>"$TMP/tunneld.log" 2>&1 &
	SRV_PID=$!
	ip netns exec "$NS_SRV" setsid "$TMP/tlsvpn-load" floor server --listen "$SERVER_UL:$PLAIN_PORT" --plain >>"$TMP/tunneld.log" 2>&1 &
	PLAIN_PID=$!
	wait_until 15 floor_up || fail "floor servers not listening after 15s"
	: >"$TMP/report.txt"
	local idle=(idle --conns "$LOAD_SESSIONS" --every "$FLOOR_EVERY" --settle "$FLOOR_SETTLE" --window "$FLOOR_WINDOW" --concurrency "$LOAD_CONCURRENCY" "${SOURCE_FLAG[@]}")
	# New connections come from the LOAD_SOURCES addresses, as tlsvpn-load's
	# do: from one address, tens of thousands of closed connections in
	# TIME_WAIT make the kernel's search for a free port the client's
	# main cost.
	local hs=(handshake --concurrency "$LOAD_CONCURRENCY" --settle 3s --window "$FLOOR_HS_WINDOW" "${SOURCE_FLAG[@]}")
	step "floor: $LOAD_SESSIONS idle plain TCP connections, a message each way every $FLOOR_EVERY, ${FLOOR_WINDOW} measured"
	floor_client "$PLAIN_PID" "${idle[@]}" --server "$SERVER_UL:$PLAIN_PORT" --plain
	step "floor: the same on TLS 1.3"
	floor_client "$SRV_PID" "${idle[@]}" --server "$SERVER_UL:$PORT"
	step "floor: full handshakes as fast as $LOAD_CONCURRENCY in flight allow, ${FLOOR_HS_WINDOW} measured"
	floor_client "$SRV_PID" "${hs[@]}" --server "$SERVER_UL:$PORT"
	if ! [[ "$LOAD_RATE" =~ ^0*(\.0*)?$ ]]; then
		step "floor: full handshakes at $LOAD_RATE/s"
		floor_client "$SRV_PID" "${hs[@]}" --server "$SERVER_UL:$PORT" --rate "$LOAD_RATE"
	fi
	step "floor: resumed handshakes as fast as possible"
	floor_client "$SRV_PID" "${hs[@]}" --server "$SERVER_UL:$PORT" --resume
	cat "$TMP/report.txt"
	REPORT_SHOWN=1
}
if [[ "$LOAD_SCENARIO" == floor ]]; then
	run_floor
	exit 0
fi

# ------------------------------------------------------------------ tunneld
MAX_CLIENTS=$((IDENTITIES + 64))
SERVER_ARGS=(--listen "$SERVER_UL:$PORT" --cert "$PKI/server.crt" --key "$PKI/server.key" --ca "$PKI/ca.crt"
	--subnet "$SUBNET" --tun "$SRV_TUN" --state-dir "$TMP/state" --control "$TMP/tunneld.sock" --metrics "$SERVER_UL:$METRICS_PORT"
	--max-clients "$MAX_CLIENTS" "${SERVER_EXTRA[@]}")

server_up() {
	alive "$SRV_PID" || fail "tunneld exited during startup"
	[[ "$(readlink "/proc/$SRV_PID/exe" 2>/dev/null)" == "$TMP/tunneld" ]] &&
		ip netns exec "$NS_SRV" ss -Hltn "sport = :$PORT" | grep -q . &&
		ip netns exec "$NS_SRV" ss -Hltn "sport = :$METRICS_PORT" | grep -q .
}

# start_server: start tunneld in the server namespace and wait until it and
# its metrics listen. setsid keeps a Ctrl-C on the terminal from reaching it
# directly; cleanup stops it by PID. The PID file is what tlsvpn-load reads.
start_server() {
	ip netns exec "$NS_SRV" setsid "$TMP/tunneld" "${SERVER_ARGS[@]}" >>"$TMP/tunneld.log" 2>&1 &
	SRV_PID=$!
	wait_until 15 server_up || fail "tunneld (pid $SRV_PID) not listening on $SERVER_UL:$PORT and :$METRICS_PORT after 15s"
	printf '%s\n' "$SRV_PID" >"$TMP/tunneld.pid"
}

step "start tunneld in $NS_SRV: ${SERVER_ARGS[*]}"
start_server
log "tunneld pid $SRV_PID"

held_up() {
	alive "$HELD_PID" || fail "tlsvpn-load holding the sessions ended: $(tail -n 5 "$TMP/held.txt")"
	[[ -s "$TMP/held-ready" ]]
}
if [[ "$LOAD_SCENARIO" == connect ]]; then
	: >"$TMP/report.txt"
	hs=(handshake --tlsvpn --server "$SERVER_UL:$PORT" --concurrency "$LOAD_CONCURRENCY" --settle 3s --window "$FLOOR_HS_WINDOW"
		--identities "$LOAD_SESSIONS" "${SOURCE_FLAG[@]}")
	if ((CONNECT_HELD > 0)); then
		step "connect: tlsvpn-load opens $CONNECT_HELD sessions and holds them while the new connections are measured"
		ip netns exec "$NS_CLI" setsid "$TMP/tlsvpn-load" --server "$SERVER_UL:$PORT" --pki "$PKI" --sessions "$CONNECT_HELD" \
			--concurrency "$LOAD_CONCURRENCY" --hold 1h --timeout 2h "${SOURCE_FLAG[@]}" --ready-file "$TMP/held-ready" >"$TMP/held.txt" 2>&1 &
		HELD_PID=$!
		wait_until 600 held_up || fail "the $CONNECT_HELD held sessions were not up after 600s"
		log "held: $(cat "$TMP/held-ready")"
	fi
	step "connect: new connections to tunneld as fast as $LOAD_CONCURRENCY in flight allow, ${FLOOR_HS_WINDOW} measured"
	floor_client "$SRV_PID" "${hs[@]}"
	if ! [[ "$LOAD_RATE" =~ ^0*(\.0*)?$ ]]; then
		step "connect: new connections at $LOAD_RATE/s"
		floor_client "$SRV_PID" "${hs[@]}" --rate "$LOAD_RATE"
	fi
	step "connect: resumed connections as fast as possible"
	floor_client "$SRV_PID" "${hs[@]}" --resume
	cat "$TMP/report.txt"
	REPORT_SHOWN=1
	exit 0
fi

# ------------------------------------------------------------------ load
LOAD_ARGS=(--server "$SERVER_UL:$PORT" --pki "$PKI" --sessions "$LOAD_SESSIONS" --rate "$LOAD_RATE"
	--concurrency "$LOAD_CONCURRENCY" --hold "$LOAD_HOLD" "${SOURCE_FLAG[@]}"
	--server-pid-file "$TMP/tunneld.pid" --metrics-url "http://$SERVER_UL:$METRICS_PORT/metrics"
	--json "$TMP/load.json" --timeout "$LOAD_TIMEOUT")
if ((LOAD_CHURN > 0)); then
	LOAD_ARGS+=(--churn "$LOAD_CHURN" --churn-life "$LOAD_CHURN_LIFE")
fi
[[ "$LOAD_TRAFFIC" =~ ^0*(\.0*)?$ ]] || LOAD_ARGS+=(--traffic "$LOAD_TRAFFIC")
[[ "$LOAD_RESUME" != 1 ]] || LOAD_ARGS+=(--resume)
if [[ "$LOAD_RECONNECT" == 1 || "$LOAD_SCENARIO" == restart ]]; then
	LOAD_ARGS+=(--reconnect)
fi
if [[ "$LOAD_SCENARIO" == restart ]]; then
	LOAD_ARGS+=(--ready-file "$TMP/ready" --stop-when-recovered --require-recovered)
fi
LOAD_ARGS+=("${LOAD_EXTRA[@]}")

step "run tlsvpn-load in $NS_CLI ($LOAD_SCENARIO): ${LOAD_ARGS[*]}"
ip netns exec "$NS_CLI" setsid "$TMP/tlsvpn-load" "${LOAD_ARGS[@]}" >"$TMP/report.txt" &
LOAD_PID=$!

# The generator ends by itself (--timeout); the script waits a minute more
# before it stops it, in case it hangs.
DEADLINE=$((SECONDS + TIMEOUT_S + 60))
RESTARTED=0
while alive "$LOAD_PID"; do
	if [[ "$LOAD_SCENARIO" == restart && "$RESTARTED" == 0 && -s "$TMP/ready" ]]; then
		RESTARTED=1
		log "ramp over ($(cat "$TMP/ready")); kill -9 tunneld in ${LOAD_RESTART_AFTER}s"
		sleep "$LOAD_RESTART_AFTER"
		step "kill -9 tunneld (pid $SRV_PID), clean up after it as systemd's ExecStopPost would, start it again"
		t0="$(date +%s%N)"
		kill -KILL "$SRV_PID" 2>/dev/null || true
		wait "$SRV_PID" 2>/dev/null || true
		SRV_PID=""
		ip netns exec "$NS_SRV" "$TMP/tunneld" --cleanup --tun "$SRV_TUN" >>"$TMP/tunneld.log" 2>&1 ||
			log "tunneld --cleanup failed (see tunneld.log)"
		start_server
		log "tunneld is back as pid $SRV_PID, listening $(awk -v ns="$(($(date +%s%N) - t0))" 'BEGIN { printf "%.2f", ns / 1e9 }')s after the kill"
	fi
	if ((SECONDS > DEADLINE)); then
		log "tlsvpn-load still running ${TIMEOUT_S}s + 60s after its start; stopping it"
		break
	fi
	sleep 0.2
done
LOAD_RC=0
kill_wait "$LOAD_PID" 15 || LOAD_RC=$?
LOAD_PID=""
if [[ "$LOAD_SCENARIO" == restart && "$RESTARTED" == 0 ]]; then
	log "the ramp never ended, so tunneld was not restarted"
fi

# ------------------------------------------------------------------ report
REPORT_SHOWN=1
cat "$TMP/report.txt"
if [[ -n "$LOAD_JSON" && -s "$TMP/load.json" ]]; then
	cp "$TMP/load.json" "$LOAD_JSON" && log "JSON report: $LOAD_JSON"
fi

step "stop tunneld (SIGTERM)"
SRV_RC=0
kill_wait "$SRV_PID" 20 || SRV_RC=$?
SRV_PID=""

# Counts of tunneld's log lines by level and message, and a few of its
# warnings, so refusals and errors the report's numbers hint at can be read.
printf '\ntunneld log summary (%s lines; exit status %s after SIGTERM)\n' "$(wc -l <"$TMP/tunneld.log")" "$SRV_RC"
awk '{
		lvl = "?"; msg = "?"
		if (match($0, /level=[A-Z]+/)) lvl = substr($0, RSTART + 6, RLENGTH - 6)
		if (match($0, /msg="[^"]*"/)) msg = substr($0, RSTART + 5, RLENGTH - 6)
		else if (match($0, /msg=[^ ]+/)) msg = substr($0, RSTART + 4, RLENGTH - 4)
		n[lvl "  " msg]++
	}
	END { for (k in n) printf "  %7d  %s\n", n[k], k }' "$TMP/tunneld.log" | sort -rn | head -n 20
WARNINGS="$(grep -E 'level=(WARN|ERROR)' "$TMP/tunneld.log" | grep -v 'no --crl' |
	sed -E 's/^time=[^ ]+ //; s/remote_addr=[^ ]+ //; s/peer=[^ ]+ //' | sort | uniq -c | sort -rn | head -n 8 || true)"
if [[ -n "$WARNINGS" ]]; then
	printf '  most frequent warnings and errors:\n%s\n' "$(printf '%s\n' "$WARNINGS" | cut -c1-300)"
fi
if [[ "$SRV_RC" -ne 0 ]]; then
	log "tunneld exited with status $SRV_RC after SIGTERM"
fi
if [[ "$LOAD_RC" -ne 0 ]]; then
	log "tlsvpn-load exited with status $LOAD_RC"
	exit "$LOAD_RC"
fi
