#!/usr/bin/env bash
# demo.sh: build tunneld and tunnelc, run them in two throwaway network
# namespaces ("laptop" and "server") joined by a veth pair, and show that IP
# traffic crosses the TLS 1.3 tunnel: handshake parameters, ping RTT, and a
# hash-checked bulk transfer through the tunnel versus over the bare veth.
#
# Usage: sudo scripts/demo.sh        (from any directory)
# Env:   DEMO_SIZE_MB=N  size of each transfer in MiB (default 100)
#        KEEP_LOGS=1     keep the temp dir (binaries, PKI, daemon logs)
#
# Everything it creates (namespaces, veth, TUN devices, processes, temp dir)
# is removed on exit, failure, Ctrl-C or SIGTERM. Traffic stays inside the two
# namespaces: underlay 198.18.0.0/30, tunnel 100.64.0.0/24.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_MB="${DEMO_SIZE_MB:-100}"
KEEP_LOGS="${KEEP_LOGS:-0}"
CONNECT_TIMEOUT=15

SUBNET=100.64.0.0/24
SERVER_TUN_IP=100.64.0.1
SERVER_UNDERLAY=198.18.0.1
LAPTOP_UNDERLAY=198.18.0.2
LISTEN_PORT=443
XFER_PORT=5201
SERVER_TUN=tunneld0
CLIENT_TUN=tunnelc0

# Unique per run, so parallel runs and leftovers of a killed run never collide.
NS_LAP="tlsvpn-laptop-$$"
NS_SRV="tlsvpn-server-$$"

TMP=""
SRV_PID=""
CLI_PID=""
RCV_PID=""
SND_PID=""
WD_PID=""
LOGS_SHOWN=0

[[ "$SIZE_MB" =~ ^[1-9][0-9]*$ ]] || die "DEMO_SIZE_MB must be a positive integer, got '$SIZE_MB'"

step() { printf '==> %s\n' "$*"; }

show_logs() {
	[[ "$LOGS_SHOWN" -eq 0 && -n "$TMP" ]] || return 0
	LOGS_SHOWN=1
	local f
	for f in "$TMP/tunneld.log" "$TMP/tunnelc.log"; do
		[[ -e "$f" ]] || continue
		printf -- '--- %s (last 40 lines) ---\n' "$(basename "$f")" >&2
		if [[ -s "$f" ]]; then tail -n 40 "$f" >&2; else echo "(empty)" >&2; fi
	done
}

fail() {
	show_logs
	die "$@"
}

cleanup() {
	local rc=$?
	set +e
	trap '' INT TERM # finish cleaning even if Ctrl-C is pressed again
	case "$rc" in
	0 | 130 | 143) ;; # success, Ctrl-C, SIGTERM: no daemon logs needed
	*) show_logs ;;
	esac
	kill_wait "$WD_PID" 2 >/dev/null 2>&1
	kill_wait "$SND_PID" 2 >/dev/null 2>&1
	kill_wait "$RCV_PID" 2 >/dev/null 2>&1
	kill_wait "$CLI_PID" 5
	kill_wait "$SRV_PID" 5
	netns_delete "$NS_LAP"
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

# Foreground helpers only: a backgrounded function runs in a subshell, so $!
# would name that subshell instead of the process. Background jobs below call
# "ip netns exec" directly (it execs the command, keeping the PID).
in_lap() { ip netns exec "$NS_LAP" "$@"; }
in_srv() { ip netns exec "$NS_SRV" "$@"; }

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# ------------------------------------------------------------------ setup
need_root "it creates network namespaces and TUN devices"
need_go
ensure_cmds ip:iproute2 ss:iproute2 ping:iputils-ping socat:socat setsid:util-linux \
	sha256sum:coreutils timeout:coreutils awk:mawk
[[ -c /dev/net/tun ]] || die "/dev/net/tun missing (load the tun module: modprobe tun)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tlsvpn-demo.XXXXXX")"
cd "$REPO_ROOT"

step "build tunneld, tunnelc"
go_mod_download
go build -o "$TMP/tunneld" ./cmd/tunneld || die "go build ./cmd/tunneld failed"
go build -o "$TMP/tunnelc" ./cmd/tunnelc || die "go build ./cmd/tunnelc failed"

step "namespaces $NS_LAP ($LAPTOP_UNDERLAY) <-veth-> $NS_SRV ($SERVER_UNDERLAY)"
ip netns add "$NS_LAP"
ip netns add "$NS_SRV"
# Create the veth ends directly inside the namespaces: nothing touches the host's namespace.
ip link add veth0 netns "$NS_LAP" type veth peer name veth0 netns "$NS_SRV"
ip -n "$NS_LAP" addr add "$LAPTOP_UNDERLAY/30" dev veth0
ip -n "$NS_SRV" addr add "$SERVER_UNDERLAY/30" dev veth0
for ns in "$NS_LAP" "$NS_SRV"; do
	ip -n "$ns" link set lo up
	ip -n "$ns" link set veth0 up
done
in_lap ping -q -c 1 -W 2 "$SERVER_UNDERLAY" >/dev/null || die "veth: $LAPTOP_UNDERLAY cannot reach $SERVER_UNDERLAY"

step "PKI: CA, server cert (IP $SERVER_UNDERLAY), client cert 'laptop'"
PKI="$TMP/pki"
# pki prints instructions meant for a person; keep them in pki.log unless it fails.
pki() {
	"$TMP/tunneld" pki "$@" >>"$TMP/pki.log" 2>&1 || {
		cat "$TMP/pki.log" >&2
		die "tunneld pki $* failed"
	}
}
pki init --dir "$PKI"
pki issue --dir "$PKI" --server --name server --ip "$SERVER_UNDERLAY"
pki issue --dir "$PKI" --client --name laptop
for f in ca.crt server.crt server.key laptop.crt laptop.key; do
	[[ -s "$PKI/$f" ]] || die "PKI: $PKI/$f was not created"
done

# ------------------------------------------------------------------ daemons
step "start tunneld in $NS_SRV, tunnelc in $NS_LAP"
# setsid: a Ctrl-C on the terminal interrupts this script only; the daemons are
# then stopped by cleanup with SIGTERM, exercising their shutdown path.
ip netns exec "$NS_SRV" setsid "$TMP/tunneld" --listen "$SERVER_UNDERLAY:$LISTEN_PORT" \
	--cert "$PKI/server.crt" --key "$PKI/server.key" --ca "$PKI/ca.crt" \
	--subnet "$SUBNET" --tun "$SERVER_TUN" --state-dir "$TMP/state" \
	--control "$TMP/tunneld.sock" >"$TMP/tunneld.log" 2>&1 &
SRV_PID=$!

listening() {
	alive "$SRV_PID" || fail "tunneld exited during startup"
	in_srv ss -Hltun "sport = :$LISTEN_PORT" | grep -q .
}
# Start the client once the server listens, so one connect attempt is enough.
wait_until "$CONNECT_TIMEOUT" listening || fail "tunneld not listening on $SERVER_UNDERLAY:$LISTEN_PORT after ${CONNECT_TIMEOUT}s"

ip netns exec "$NS_LAP" setsid "$TMP/tunnelc" --server "$SERVER_UNDERLAY:$LISTEN_PORT" \
	--cert "$PKI/laptop.crt" --key "$PKI/laptop.key" --ca "$PKI/ca.crt" \
	--tun "$CLIENT_TUN" --control "$TMP/tunnelc.sock" >"$TMP/tunnelc.log" 2>&1 &
CLI_PID=$!

connected() {
	alive "$SRV_PID" || fail "tunneld exited (see log above)"
	alive "$CLI_PID" || fail "tunnelc exited (see log above)"
	grep -Eq '(^|[[:space:]])msg="?connected"?([[:space:]]|$)' "$TMP/tunnelc.log" &&
		[[ -n "$(ip -n "$NS_LAP" -4 -o addr show to "$SUBNET")" ]]
}
wait_until "$CONNECT_TIMEOUT" connected ||
	fail "no tunnel after ${CONNECT_TIMEOUT}s (client 'connected' log line + address in $SUBNET on $NS_LAP)"

TLS_VERSION="$(slog_value tls_version "$TMP/tunnelc.log" connected || true)"
CIPHER="$(slog_value cipher_suite "$TMP/tunnelc.log" connected || true)"
CURVE="$(slog_value curve "$TMP/tunnelc.log" connected || true)"
TUN_ADDR="$(slog_value tunnel_addr "$TMP/tunnelc.log" connected || true)"
TUN_MTU="$(slog_value mtu "$TMP/tunnelc.log" connected || true)"
HAVE_ADDR="$(ip -n "$NS_LAP" -4 -o addr show to "$SUBNET" | awk '{print $4; exit}')"
printf '    connected: %s, %s, %s; laptop %s (log says %s), mtu %s\n' \
	"${TLS_VERSION:-?}" "${CIPHER:-?}" "${CURVE:-?}" "$HAVE_ADDR" "${TUN_ADDR:-?}" "${TUN_MTU:-?}"
[[ "$TLS_VERSION" == "TLS 1.3" ]] || fail "client log says tls_version='$TLS_VERSION', want 'TLS 1.3'"

# ------------------------------------------------------------------ ping
# ping_avg NS DST: prints the average RTT in ms of 10 pings.
ping_avg() {
	local out
	out="$(ip netns exec "$1" ping -q -n -c 10 -i 0.1 -W 2 "$2")" || {
		printf '%s\n' "$out" >&2
		return 1
	}
	printf '%s\n' "$out" | sed -n 's|^rtt [^=]*= [^/]*/\([^/]*\)/.*|\1|p'
}
step "ping $SERVER_TUN_IP through the tunnel"
RTT_TUN="$(ping_avg "$NS_LAP" "$SERVER_TUN_IP")" || fail "ping $SERVER_TUN_IP through the tunnel failed"
RTT_VETH="$(ping_avg "$NS_LAP" "$SERVER_UNDERLAY")" || fail "ping $SERVER_UNDERLAY over the veth failed"
printf '    avg rtt %s ms (bare veth %s ms)\n' "$RTT_TUN" "$RTT_VETH"

# ------------------------------------------------------------------ control
step "tunneld clients, tunnelc status (control sockets)"
CLIENTS="$("$TMP/tunneld" clients --control "$TMP/tunneld.sock")" || fail "tunneld clients failed"
printf '%s\n' "$CLIENTS" | sed 's/^/    /'
grep -q '^laptop ' <<<"$CLIENTS" || fail "tunneld clients does not list laptop"
STATUS="$("$TMP/tunnelc" status --control "$TMP/tunnelc.sock")" || fail "tunnelc status failed"
printf '%s\n' "$STATUS" | sed 's/^/    /'
grep -Eq '^state: +up' <<<"$STATUS" || fail "tunnelc status does not say up"

# ------------------------------------------------------------------ transfer
step "payload: $SIZE_MB MiB from /dev/urandom"
PAYLOAD="$TMP/payload"
PAYLOAD_BYTES=$((SIZE_MB * 1024 * 1024))
head -c "$PAYLOAD_BYTES" /dev/urandom >"$PAYLOAD"
PAYLOAD_SHA="$(sha256sum <"$PAYLOAD" | awk '{print $1}')"
XFER_TIMEOUT=$((60 + SIZE_MB * 2)) # generous: even 1 MiB/s finishes

xfer_listening() {
	alive "$SRV_PID" || fail "tunneld exited before the transfer"
	alive "$CLI_PID" || fail "tunnelc exited before the transfer"
	alive "$RCV_PID" && in_srv ss -Hltn "sport = :$XFER_PORT" | grep -q .
}

# transfer LABEL DST_IP: sends the payload from the laptop to a receiver in the
# server namespace bound on DST_IP, times it, and compares sha256 sums. The
# receiver writes to a file and hashes after the clock stops: hashing inline
# would cap the bare-veth baseline at sha256 speed (~3 Gbit/s on one core).
# Sets XFER_MBPS and XFER_SECS; fails on a hash mismatch.
transfer() {
	local label="$1" dst="$2" recv="$TMP/recv-$1" err="$TMP/recv-$1.err"
	local t0 t1 got
	# timeout(1) bounds each side; it also forwards cleanup's SIGTERM.
	ip netns exec "$NS_SRV" timeout "$XFER_TIMEOUT" socat -u -b 262144 \
		"TCP4-LISTEN:$XFER_PORT,bind=$dst,reuseaddr" "CREATE:$recv" 2>"$err" &
	RCV_PID=$!
	wait_until 5 xfer_listening || { cat "$err" >&2; fail "$label: receiver did not listen on $dst:$XFER_PORT"; }

	t0="$(date +%s%N)"
	ip netns exec "$NS_LAP" timeout "$XFER_TIMEOUT" socat -u -b 262144 \
		"OPEN:$PAYLOAD,rdonly" "TCP4:$dst:$XFER_PORT" &
	SND_PID=$!
	# Watchdog: if a daemon dies mid-transfer, stop both ends now instead of
	# after XFER_TIMEOUT. The main shell blocks in wait, so the clock stops
	# the moment the receiver has everything.
	(
		while kill -0 "$SRV_PID" 2>/dev/null && kill -0 "$CLI_PID" 2>/dev/null; do
			sleep 0.1
		done
		kill -TERM "$SND_PID" "$RCV_PID" 2>/dev/null
	) &
	WD_PID=$!
	local snd_rc=0 rcv_rc=0
	wait "$SND_PID" || snd_rc=$?
	wait "$RCV_PID" || rcv_rc=$?
	t1="$(date +%s%N)"
	SND_PID=""
	RCV_PID=""
	kill "$WD_PID" 2>/dev/null || true
	wait "$WD_PID" 2>/dev/null || true
	WD_PID=""
	alive "$SRV_PID" || fail "$label: tunneld exited during the transfer"
	alive "$CLI_PID" || fail "$label: tunnelc exited during the transfer"
	[[ "$snd_rc" -eq 0 ]] || { cat "$err" >&2; fail "$label: sending $SIZE_MB MiB to $dst:$XFER_PORT failed (exit $snd_rc)"; }
	[[ "$rcv_rc" -eq 0 ]] || { cat "$err" >&2; fail "$label: receiver on $dst:$XFER_PORT failed (exit $rcv_rc)"; }
	got="$(sha256sum <"$recv" | awk '{print $1}')"
	rm -f -- "$recv"
	[[ "$got" == "$PAYLOAD_SHA" ]] ||
		fail "$label: sha256 mismatch: sent $PAYLOAD_SHA, received $got"
	XFER_SECS="$(awk -v ns="$((t1 - t0))" 'BEGIN { printf "%.2f", ns / 1e9 }')"
	XFER_MBPS="$(awk -v b="$PAYLOAD_BYTES" -v ns="$((t1 - t0))" 'BEGIN { printf "%.0f", b * 8 * 1000 / ns }')"
	printf '    %s: %s MiB in %s s = %s Mbit/s, sha256 OK\n' "$label" "$SIZE_MB" "$XFER_SECS" "$XFER_MBPS"
}

step "transfer through the tunnel: $NS_LAP -> $SERVER_TUN_IP:$XFER_PORT"
transfer tunnel "$SERVER_TUN_IP"
TUN_MBPS="$XFER_MBPS"
TUN_SECS="$XFER_SECS"
step "same transfer over the bare veth: $NS_LAP -> $SERVER_UNDERLAY:$XFER_PORT"
transfer veth "$SERVER_UNDERLAY"
VETH_MBPS="$XFER_MBPS"
rm -f -- "$PAYLOAD" # not worth keeping with KEEP_LOGS=1
RATIO="$(awk -v a="$TUN_MBPS" -v b="$VETH_MBPS" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "n/a" }')"

# ------------------------------------------------------------------ shutdown
step "stop tunnelc, tunneld (SIGTERM) and check they removed their state"
rc=0
kill_wait "$CLI_PID" 10 || rc=$?
CLI_PID=""
[[ "$rc" -eq 0 ]] || fail "tunnelc exited with status $rc after SIGTERM, want 0"
rc=0
kill_wait "$SRV_PID" 10 || rc=$?
SRV_PID=""
[[ "$rc" -eq 0 ]] || fail "tunneld exited with status $rc after SIGTERM, want 0"

# leftovers NS DEV: prints what a stopped daemon left behind in NS.
leftovers() {
	local ns="$1" dev="$2"
	ip -n "$ns" -o addr show to "$SUBNET"
	ip -n "$ns" -4 route show table all | grep -F "${SUBNET%.*}." || true
	ip -n "$ns" link show "$dev" 2>/dev/null || true
	if command -v nft >/dev/null 2>&1; then
		ip netns exec "$ns" nft list tables 2>/dev/null || true
	fi
}
no_leftovers() { [[ -z "$(leftovers "$NS_LAP" "$CLIENT_TUN")$(leftovers "$NS_SRV" "$SERVER_TUN")" ]]; }
# TUN devices go away asynchronously after close: allow a moment.
if ! wait_until 3 no_leftovers; then
	printf -- '--- left in %s ---\n%s\n--- left in %s ---\n%s\n' \
		"$NS_LAP" "$(leftovers "$NS_LAP" "$CLIENT_TUN")" \
		"$NS_SRV" "$(leftovers "$NS_SRV" "$SERVER_TUN")" >&2
	fail "daemons left addresses, routes, devices or nftables tables behind after SIGTERM"
fi
echo "    clean: no tunnel address, route, device or nftables table left"

# ------------------------------------------------------------------ summary
cat <<EOF

tlsvpn demo summary
  TLS version        ${TLS_VERSION:-?}
  cipher suite       ${CIPHER:-?}
  key exchange       ${CURVE:-?}
  tunnel             ${TUN_ADDR:-$HAVE_ADDR} -> $SERVER_TUN_IP, mtu ${TUN_MTU:-?}
  ping RTT (avg)     $RTT_TUN ms (bare veth $RTT_VETH ms)
  tunnel throughput  $TUN_MBPS Mbit/s ($SIZE_MB MiB in $TUN_SECS s)
  veth throughput    $VETH_MBPS Mbit/s
  tunnel / veth      $RATIO
  sha256             OK (both transfers)
  shutdown           clean
EOF
