#!/usr/bin/env bash
# bench.sh - throughput / latency / CPU benchmark of tlsvpn against
# wireguard-go and the bare veth it runs over, and of tlsvpn's default
# AES-GCM (Go's) against its opt-in own AES-GCM (--own-aes-gcm).
#
# Run as root from anywhere inside the repository:
#
#   sudo scripts/bench.sh
#
# Two network namespaces joined by one veth pair carry four paths
# (selectable with BENCH_PATHS), all up at once during a round:
#
#   veth    bare veth, 198.18.0.2 -> 198.18.0.1           (ceiling)
#   wg      wireguard-go (version pinned in go.mod), 100.65.0.2 -> 100.65.0.1
#   tlsvpn  tunnelc -> tunneld over TLS with the default crypto (Go's
#           AES-GCM), port 443, 100.64.0.2 -> 100.64.0.1
#   tlsown  a second tunnelc -> tunneld pair, both with --own-aes-gcm
#           (tlsvpn's own AES-GCM assembly), port 8443, 100.66.0.2 -> 100.66.0.1
#
# Both tlsvpn pairs use the same PKI (server certificate for 198.18.0.1) and
# get TUNNEL_FLAGS_SERVER / TUNNEL_FLAGS_CLIENT. Which AES-GCM each daemon
# says it uses (its "data phase:" start-up line) is in the report's notes;
# where the own AES-GCM cannot run, tlsown falls back to Go's and a NOTE
# says so (the tlsown column then measures Go's AES-GCM too).
#
# Namespace "a" holds the server side (iperf3 -s, both tunneld, wg peer a),
# namespace "b" the client side (iperf3 -c, both tunnelc, wg peer b).
#
# Per path and round it measures (groups selectable with BENCH_TESTS):
#
#   tcp    TCP 1 stream both ways, 4 streams (iperf3), and the tunnel
#          processes' CPU seconds per GB over those three tests
#   ping   ping RTT idle and under a 1-stream load
#   loss   TCP 1 stream with 1% random loss on the underlay (nftables numgen)
#   small  many small packets: UDP with 64-byte payloads, client->server and
#          server->client, offered as fast as the sender can for
#          BENCH_SMALL_SECONDS; packets per second received (and, in the
#          JSON, sent, received and loss at that offer)
#   burst  BENCH_BURST (2,000) small packets at once, BENCH_BURST_TRIES
#          times per round: UDP datagrams from the server side to the
#          client's tunnel address ("to one client"), and ICMP echo
#          requests (56 data bytes, as ping sends) from the client to the
#          server's tunnel address (the replies counted); the share lost,
#          and in the JSON where it was lost: TX dropped on the path's
#          server and client devices (the TUN transmit queue; for the veth
#          its own drops) and tlsvpn's own drop counters (mux queue full,
#          TUN write refused) read from the daemons' --metrics
#
# and the peak RSS of the tunnel processes after the tcp, ping and loss
# tests. Each test runs on every path back to back before the next test
# starts, so the values of one ratio are measured seconds apart. Rounds
# alternate the order of the paths; the markdown table on stdout has the
# medians, BENCH_JSON gets every raw value.
#
# The small and burst tests use pktgen, a small Go program that this
# script writes to its temp directory and builds (standard library only):
# it sends with sendmmsg and receives with recvmmsg from socket buffers
# forced big enough for a whole burst, so that neither end caps or loses
# what the paths carry. iperf3 does not fit here: with 64-byte UDP on this
# 2-core machine its receiver loses packets in its own socket buffer on the
# bare veth (50,000 to 210,000 packets/s received, where pktgen gets over
# 400,000 without loss), and its per-packet cost leaves the tunnels less
# CPU (tlsvpn measured at half of pktgen's figure or less). The veth loses
# nothing to pktgen, so its small-packet figure is pktgen's sending rate:
# a ceiling of this machine's sender, not of the veth. While it floods,
# the sender keeps one of the machine's two cores busy; both ends of the
# tunnel and the receiver share what is left, for every path alike.
#
# Ratios in the table are of the medians as shown (numerator / denominator):
#   tlsvpn/wireguard-go  default tlsvpn against wireguard-go
#   own/wireguard-go     tlsvpn --own-aes-gcm against wireguard-go
#   tlsvpn/own           the cost of the default crypto: default tlsvpn
#                        against tlsvpn --own-aes-gcm; for throughput < 1
#                        means the default is slower
#   tlsvpn/veth          default tlsvpn against the bare veth
# For throughput and packets per second higher is better (a ratio > 1
# favours the numerator); for RTT, CPU per GB, RSS and burst loss lower is
# better (a ratio < 1 favours it).
#
# Environment:
#   BENCH_PATHS          paths to run, default "veth wg tlsvpn tlsown"
#   BENCH_TESTS          test groups to run, default "tcp ping loss small burst"
#   BENCH_SECONDS        seconds per iperf3 test, default 10
#   BENCH_SMALL_SECONDS  seconds per small-packet test, default BENCH_SECONDS,
#                        at most 5
#   BENCH_SMALL_SIZE     UDP payload bytes of the small-packet and burst
#                        tests, default 64
#   BENCH_BURST          packets per burst, default 2000
#   BENCH_BURST_TRIES    bursts of each kind per path and round, default 3
#   BENCH_ROUNDS         rounds, default 2 (odd rounds in order, even reversed)
#   BENCH_JSON           JSON output file, default ./bench.json
#   BENCH_PINGS          pings per RTT measurement, default 20 (0.05 s apart)
#   BENCH_LOSS_PCT       loss percentage of the loss test, default 1
#   BENCH_LOSS_OFFLOAD   "off" (default): turn TSO/GSO off on the veth during
#                        the loss test so each nft verdict hits one wire-sized
#                        packet; "on": leave offloads, the rule then drops
#                        whole GSO super-packets
#   BENCH_PAIRS          after the rounds, N pairs of short 1-stream tests
#                        (each direction) run back to back on wireguard-go,
#                        tlsvpn and, when in BENCH_PATHS, tlsown, the order
#                        rotating each pair; reports per pair tlsvpn/wg,
#                        own/wg and tlsvpn/own; default 0 (off). Needs both
#                        wg and tlsvpn in BENCH_PATHS
#   BENCH_PAIR_SECONDS   seconds per paired test, default 4
#   BENCH_TUNNEL_WAIT    seconds to wait for a tunnel to come up, default 20
#   BENCH_KEEP_LOGS      directory to copy daemon logs into (optional)
#   BENCH_NO_INSTALL     set to 1 to never apt-get install missing tools
#   TUNNEL_FLAGS_SERVER  extra flags for both tunneld (e.g. "--no-offload")
#   TUNNEL_FLAGS_CLIENT  extra flags for both tunnelc (putting --own-aes-gcm
#                        or --stdlib-tls-records here changes the tlsvpn
#                        path too; the notes then say so)
#   TUNNEL_BIN_DIR       use tunneld/tunnelc from this directory instead of
#                        building ./cmd/tunneld and ./cmd/tunnelc
#
# The tlsvpn daemons get --metrics on their namespace's loopback
# (127.0.0.1:9100 to 9103) for the drop counters of the small-packet and
# burst tests.
#
# Everything it creates (namespaces, veth, TUN devices, nft tables,
# processes, wireguard control sockets, temp files) is removed on exit,
# including failure and Ctrl-C. Processes are only ever killed by the PIDs
# this script started.

set -uo pipefail

BENCH_PATHS=${BENCH_PATHS:-"veth wg tlsvpn tlsown"}
BENCH_TESTS=${BENCH_TESTS:-"tcp ping loss small burst"}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_JSON=${BENCH_JSON:-./bench.json}
BENCH_PINGS=${BENCH_PINGS:-20}
BENCH_LOSS_PCT=${BENCH_LOSS_PCT:-1}
BENCH_LOSS_OFFLOAD=${BENCH_LOSS_OFFLOAD:-off}
BENCH_TUNNEL_WAIT=${BENCH_TUNNEL_WAIT:-20}
BENCH_PAIRS=${BENCH_PAIRS:-0}
BENCH_PAIR_SECONDS=${BENCH_PAIR_SECONDS:-4}
BENCH_KEEP_LOGS=${BENCH_KEEP_LOGS:-}
BENCH_NO_INSTALL=${BENCH_NO_INSTALL:-0}
TUNNEL_FLAGS_SERVER=${TUNNEL_FLAGS_SERVER:-}
TUNNEL_FLAGS_CLIENT=${TUNNEL_FLAGS_CLIENT:-}
TUNNEL_BIN_DIR=${TUNNEL_BIN_DIR:-}
if [[ -z ${BENCH_SMALL_SECONDS:-} ]]; then
  BENCH_SMALL_SECONDS=5
  if [[ $BENCH_SECONDS =~ ^[0-9]+$ ]] && ((BENCH_SECONDS < 5)); then BENCH_SMALL_SECONDS=$BENCH_SECONDS; fi
fi
BENCH_SMALL_SIZE=${BENCH_SMALL_SIZE:-64}
BENCH_BURST=${BENCH_BURST:-2000}
BENCH_BURST_TRIES=${BENCH_BURST_TRIES:-3}

# ---------------------------------------------------------------- names
ID=$$
NS_A="tvb${ID}a"            # server side
NS_B="tvb${ID}b"            # client side
VETH_A="tvb${ID}va"
VETH_B="tvb${ID}vb"
UL_A=198.18.0.1
UL_B=198.18.0.2
WG_IF_A="wgb${ID}a"
WG_IF_B="wgb${ID}b"
WG_A=100.65.0.1
WG_B=100.65.0.2
TV_IF_S="tvb${ID}s"
TV_IF_C="tvb${ID}c"
TV_S=100.64.0.1
TV_C=100.64.0.2
TV_PORT=443
TV_SUBNET=100.64.0.0/24
TO_IF_S="tvo${ID}s"         # tlsown: the --own-aes-gcm pair
TO_IF_C="tvo${ID}c"
TO_S=100.66.0.1
TO_C=100.66.0.2
TO_PORT=8443
TO_SUBNET=100.66.0.0/24      # tunnels may only use 100.64.0.0/10
NFT_TABLE="tvbloss${ID}"
WG_SOCK_DIR=/var/run/wireguard
IPERF_PORT=5201
SMALL_PORT=5301              # UDP port of the small-packet and burst receivers
# per path: the devices whose TX drops the burst tests count (server side,
# client side), the client's address (the server->client tests aim at it)
# and the tlsvpn daemons' metrics ports (on their namespace's loopback)
declare -A SDEV=([veth]=$VETH_A [wg]=$WG_IF_A [tlsvpn]=$TV_IF_S [tlsown]=$TO_IF_S)
declare -A CDEV=([veth]=$VETH_B [wg]=$WG_IF_B [tlsvpn]=$TV_IF_C [tlsown]=$TO_IF_C)
declare -A CTARGET=([veth]=$UL_B [wg]=$WG_B [tlsvpn]=$TV_C [tlsown]=$TO_C)
declare -A MPORT_S=([tlsvpn]=9100 [tlsown]=9102)
declare -A MPORT_C=([tlsvpn]=9101 [tlsown]=9103)

WORK=""
PIDS=()              # every background process started by this script
LAST_PID=""
IPERF_PID=""
WG_SOCK_DIR_CREATED=0
CLEANED=0
SKIP_TLSVPN_REASON=""
SKIP_WG_REASON=""
NOTES=()             # extra lines for the report
declare -A DATA_PHASE=() # "PATH tunneld" / "PATH tunnelc": AES-GCM the daemon reported

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- processes
# start_bg LOGFILE CMD...: start CMD in the background, remember its PID.
start_bg() {
  local logf=$1; shift
  "$@" >"$logf" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

forget_pid() {
  local p=$1 i
  for i in "${!PIDS[@]}"; do
    [[ ${PIDS[$i]} == "$p" ]] && unset 'PIDS[i]'
  done
}

# kill_pid PID: TERM, wait up to 5 s, then KILL. Only PIDs we started.
kill_pid() {
  local p=$1 i
  [[ -n $p ]] || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  fi
  wait "$p" 2>/dev/null
  forget_pid "$p"
  return 0
}

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# ---------------------------------------------------------------- cleanup
cleanup() {
  local rc=$?
  trap '' INT TERM
  [[ $CLEANED == 1 ]] && return
  CLEANED=1
  local p
  for p in "${PIDS[@]}"; do
    kill_pid "$p"
  done
  if ip netns list 2>/dev/null | grep -qw "$NS_A"; then
    ip netns exec "$NS_A" nft delete table inet "$NFT_TABLE" 2>/dev/null
    ip netns del "$NS_A" 2>/dev/null
  fi
  if ip netns list 2>/dev/null | grep -qw "$NS_B"; then
    ip netns del "$NS_B" 2>/dev/null
  fi
  # a veth still in the root namespace (setup interrupted before the move)
  ip link del "$VETH_A" 2>/dev/null
  ip link del "$VETH_B" 2>/dev/null
  rm -f "$WG_SOCK_DIR/$WG_IF_A.sock" "$WG_SOCK_DIR/$WG_IF_B.sock"
  if [[ $WG_SOCK_DIR_CREATED == 1 ]]; then
    rmdir "$WG_SOCK_DIR" 2>/dev/null
  fi
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ -n $BENCH_KEEP_LOGS && -d $WORK/logs ]]; then
      mkdir -p "$BENCH_KEEP_LOGS" && cp -r "$WORK/logs/." "$BENCH_KEEP_LOGS/" 2>/dev/null
    fi
    rm -rf "$WORK"
  fi
  if ((rc != 0)); then log "exit status $rc (cleaned up)"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------- checks
[[ $(id -u) == 0 ]] || die "must run as root"
[[ $BENCH_SECONDS =~ ^[0-9]+$ && $BENCH_SECONDS -ge 1 ]] || die "BENCH_SECONDS must be a positive integer"
[[ $BENCH_ROUNDS =~ ^[0-9]+$ && $BENCH_ROUNDS -ge 1 ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $BENCH_PINGS =~ ^[0-9]+$ && $BENCH_PINGS -ge 1 ]] || die "BENCH_PINGS must be a positive integer"
[[ $BENCH_PAIRS =~ ^[0-9]+$ ]] || die "BENCH_PAIRS must be a non-negative integer"
[[ $BENCH_PAIR_SECONDS =~ ^[0-9]+$ && $BENCH_PAIR_SECONDS -ge 1 ]] || die "BENCH_PAIR_SECONDS must be a positive integer"
[[ $BENCH_LOSS_PCT =~ ^[0-9]+$ && $BENCH_LOSS_PCT -le 100 ]] || die "BENCH_LOSS_PCT must be an integer 0..100"
[[ $BENCH_SMALL_SECONDS =~ ^[0-9]+$ && $BENCH_SMALL_SECONDS -ge 1 ]] || die "BENCH_SMALL_SECONDS must be a positive integer"
[[ $BENCH_SMALL_SIZE =~ ^[0-9]+$ && $BENCH_SMALL_SIZE -ge 8 && $BENCH_SMALL_SIZE -le 1400 ]] || die "BENCH_SMALL_SIZE must be an integer 8..1400"
[[ $BENCH_BURST =~ ^[0-9]+$ && $BENCH_BURST -ge 1 && $BENCH_BURST -le 65536 ]] || die "BENCH_BURST must be an integer 1..65536"
[[ $BENCH_BURST_TRIES =~ ^[0-9]+$ && $BENCH_BURST_TRIES -ge 1 ]] || die "BENCH_BURST_TRIES must be a positive integer"

json_dir=$(dirname -- "$BENCH_JSON")
[[ -d $json_dir && -w $json_dir ]] || die "directory of BENCH_JSON ($json_dir) is not writable"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || die "cannot find repository root"

read -r -a PATHS_REQ <<<"$BENCH_PATHS"
for p in "${PATHS_REQ[@]}"; do
  case $p in veth | wg | tlsvpn | tlsown) ;; *) die "unknown path '$p' in BENCH_PATHS (veth wg tlsvpn tlsown)" ;; esac
done
((${#PATHS_REQ[@]} > 0)) || die "BENCH_PATHS is empty"
want() { [[ " ${PATHS_REQ[*]} " == *" $1 "* ]]; }
read -r -a TESTS_REQ <<<"$BENCH_TESTS"
for t in "${TESTS_REQ[@]}"; do
  case $t in tcp | ping | loss | small | burst) ;; *) die "unknown test '$t' in BENCH_TESTS (tcp ping loss small burst)" ;; esac
done
((${#TESTS_REQ[@]} > 0)) || die "BENCH_TESTS is empty"
want_test() { [[ " ${TESTS_REQ[*]} " == *" $1 "* ]]; }
if ((BENCH_PAIRS > 0)) && ! { want wg && want tlsvpn; }; then
  die "BENCH_PAIRS needs both wg and tlsvpn in BENCH_PATHS"
fi

# ---------------------------------------------------------------- tools
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need iperf3 iperf3
need jq jq
need ip iproute2
need ping iputils-ping
need nft nftables
need getconf libc-bin
if [[ $BENCH_LOSS_OFFLOAD == off ]] && want_test loss; then need ethtool ethtool; fi
if want wg; then need wg wireguard-tools; fi
if { want_test small || want_test burst; } && { want tlsvpn || want tlsown; }; then need curl curl; fi
if ((${#need_pkgs[@]})); then
  [[ $BENCH_NO_INSTALL == 1 ]] && die "missing packages: ${need_pkgs[*]}"
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}"; } >&2 ||
    die "apt-get install ${need_pkgs[*]} failed"
fi
if want wg || want tlsvpn || want tlsown || want_test small || want_test burst; then
  command -v go >/dev/null 2>&1 || die "go not found"
fi

CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/tlsvpn-bench.XXXXXX) || die "mktemp failed"
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/iperf" "$WORK/pki" "$WORK/wg"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# ---------------------------------------------------------------- machine notes
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
GO_VERSION=$(go version 2>/dev/null || echo "go: n/a")
KERNEL=$(uname -srm)
NPROC=$(nproc)
IPERF_VERSION=$(iperf3 --version 2>/dev/null | head -n1)
WG_VERSION=""

# ---------------------------------------------------------------- build
if want wg; then
  WG_VERSION=$(cd "$REPO" && go list -m -f '{{.Version}}' golang.zx2c4.com/wireguard 2>/dev/null)
  if [[ -z $WG_VERSION ]]; then
    SKIP_WG_REASON="golang.zx2c4.com/wireguard not in go.mod"
  else
    log "go install golang.zx2c4.com/wireguard@$WG_VERSION"
    if ! (cd "$REPO" && GOBIN="$WORK/bin" go install "golang.zx2c4.com/wireguard@$WG_VERSION") >"$WORK/logs/wg-build.log" 2>&1; then
      SKIP_WG_REASON="go install wireguard failed"
      tail -n 20 "$WORK/logs/wg-build.log" >&2
    fi
  fi
  [[ -n $SKIP_WG_REASON ]] && log "wireguard-go path skipped: $SKIP_WG_REASON"
fi

if want tlsvpn || want tlsown; then
  TUNNELD=$WORK/bin/tunneld
  TUNNELC=$WORK/bin/tunnelc
  if [[ -n $TUNNEL_BIN_DIR ]]; then
    TUNNELD=$TUNNEL_BIN_DIR/tunneld
    TUNNELC=$TUNNEL_BIN_DIR/tunnelc
    [[ -x $TUNNELD && -x $TUNNELC ]] || SKIP_TLSVPN_REASON="no executable tunneld/tunnelc in $TUNNEL_BIN_DIR"
  else
    log "go build ./cmd/tunneld ./cmd/tunnelc"
    if ! (cd "$REPO" && go build -o "$WORK/bin/" ./cmd/tunneld ./cmd/tunnelc) >"$WORK/logs/tlsvpn-build.log" 2>&1; then
      SKIP_TLSVPN_REASON="go build failed"
      tail -n 20 "$WORK/logs/tlsvpn-build.log" >&2
    fi
  fi
  if [[ -z $SKIP_TLSVPN_REASON ]]; then
    D=$WORK/pki
    if ! { "$TUNNELD" pki init --dir "$D" &&
      "$TUNNELD" pki issue --dir "$D" --server --name server --ip "$UL_A" &&
      "$TUNNELD" pki issue --dir "$D" --client --name client; } >"$WORK/logs/pki.log" 2>&1; then
      SKIP_TLSVPN_REASON="tunneld pki failed"
      tail -n 20 "$WORK/logs/pki.log" >&2
    fi
  fi
  [[ -n $SKIP_TLSVPN_REASON ]] && log "tlsvpn paths skipped: $SKIP_TLSVPN_REASON"
fi

# ---------------------------------------------------------------- pktgen
# The sender and receiver of the small and burst tests (see the top).
PKTGEN=""
SKIP_PKTGEN_REASON=""
write_pktgen() {
  mkdir -p "$WORK/pktgen" || return 1
  printf 'module pktgen\n\ngo 1.22\n' >"$WORK/pktgen/go.mod" || return 1
  cat >"$WORK/pktgen/main.go" <<'EOF'
// pktgen: the small-packet load of tlsvpn's scripts/bench.sh.
//
//	pktgen flood -to IP:PORT -size 64 -seconds 3  UDP as fast as it can; prints sent=N seconds=S
//	pktgen burst -to IP:PORT -size 64 -n 2000     N datagrams at once; prints sent=N
//	pktgen sink -listen IP:PORT [-expect N] [-idle 1s] [-seconds 30]
//	                                              counts datagrams; prints received=N span=S
//	                                              (S: seconds from the first to the last)
//	pktgen echo -to IP -size 56 -n 2000 -wait 1s  N ICMP echo requests at once; prints
//	                                              sent=N received=M (distinct replies)
//
// Packets go out in sendmmsg batches from a socket buffer forced big
// enough for a whole burst (SO_SNDBUFFORCE), and come in in recvmmsg
// batches into a receive buffer forced big enough for a whole burst
// (SO_RCVBUFFORCE): the tool neither caps nor loses a burst itself, so
// what is missing was lost on the path. Needs root.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// mmsghdr is struct mmsghdr on 64-bit Linux.
type mmsghdr struct {
	hdr syscall.Msghdr
	n   uint32
	_   [4]byte
}

// sendmmsg and recvmmsg by GOARCH (64-bit only); elsewhere one system
// call per packet.
var (
	sysSendmmsg = map[string]uintptr{"amd64": 307, "arm64": 269, "riscv64": 269, "loong64": 269, "ppc64le": 349, "s390x": 358}[runtime.GOARCH]
	sysRecvmmsg = map[string]uintptr{"amd64": 299, "arm64": 243, "riscv64": 243, "loong64": 243, "ppc64le": 343, "s390x": 357}[runtime.GOARCH]
)

const (
	maxBatch      = 1024 // UIO_MAXIOV, the kernel's bound on one call's messages
	msgWaitForOne = 0x10000
	bigBuf        = 32 << 20
	magic         = "tvbp" // starts every datagram; the sink counts only those
)

func main() {
	if len(os.Args) < 2 {
		fatal(errors.New("usage: pktgen flood|burst|sink|echo [flags]"))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	to := fs.String("to", "", "destination IP:PORT (echo: IP)")
	listen := fs.String("listen", "", "sink: IP:PORT to receive on")
	size := fs.Int("size", 64, "UDP payload bytes (echo: ICMP data bytes)")
	seconds := fs.Float64("seconds", 3, "flood: seconds to send; sink: most seconds to run")
	n := fs.Int("n", 2000, "burst, echo: packets")
	expect := fs.Int("expect", 0, "sink: stop after this many datagrams (0: no limit)")
	idle := fs.Duration("idle", time.Second, "sink: stop this long after the last datagram")
	wait := fs.Duration("wait", time.Second, "echo: stop this long after the last reply")
	fs.Parse(os.Args[2:])
	if *size < len(magic) || *size > 1400 {
		fatal(fmt.Errorf("-size %d out of range [%d, 1400]", *size, len(magic)))
	}
	if *n < 1 || *n > 65536 {
		fatal(fmt.Errorf("-n %d out of range [1, 65536]", *n))
	}
	var err error
	switch os.Args[1] {
	case "flood":
		err = flood(*to, *size, time.Duration(*seconds*float64(time.Second)))
	case "burst":
		err = burst(*to, *size, *n)
	case "sink":
		err = sink(*listen, *expect, *idle, time.Duration(*seconds*float64(time.Second)))
	case "echo":
		err = echo(*to, *size, *n, *wait)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "pktgen:", err)
	os.Exit(1)
}

func sockaddr(ap netip.AddrPort) (*syscall.SockaddrInet4, error) {
	if !ap.Addr().Is4() {
		return nil, fmt.Errorf("%s: IPv4 only", ap)
	}
	return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
}

// udpSocket returns a UDP socket connected to to, or bound to listen.
func udpSocket(to, listen string) (int, error) {
	addr := to
	if addr == "" {
		addr = listen
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, err
	}
	sa, err := sockaddr(ap)
	if err != nil {
		return -1, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if to != "" {
		err = syscall.Connect(fd, sa)
	} else {
		err = syscall.Bind(fd, sa)
	}
	return fd, err
}

func setBuf(fd, opt int) error {
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, bigBuf); err != nil {
		return fmt.Errorf("socket buffer (needs root): %w", err)
	}
	return nil
}

func setRecvTimeout(fd int, d time.Duration) error {
	tv := syscall.NsecToTimeval(int64(d))
	return syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
}

// batch is a set of messages for sendmmsg or recvmmsg, one buffer each.
type batch struct {
	msgs []mmsghdr
	iovs []syscall.Iovec
	bufs [][]byte
}

func newBatch(bufs [][]byte) *batch {
	b := &batch{msgs: make([]mmsghdr, len(bufs)), iovs: make([]syscall.Iovec, len(bufs)), bufs: bufs}
	for i := range bufs {
		b.iovs[i].Base = &bufs[i][0]
		b.iovs[i].SetLen(len(bufs[i]))
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.Iovlen = 1
	}
	return b
}

// send sends messages from..to-1 (or fewer) on the connected socket fd
// in one call and returns how many went out.
func (b *batch) send(fd, from, to int) (int, error) {
	if sysSendmmsg == 0 {
		if _, err := syscall.Write(fd, b.bufs[from]); err != nil {
			return 0, err
		}
		return 1, nil
	}
	r, _, e := syscall.Syscall6(sysSendmmsg, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[from])), uintptr(min(to-from, maxBatch)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// sendAll sends messages 0..n-1, riding over transient errors.
func (b *batch) sendAll(fd, n int) (int, error) {
	sent, tries := 0, 0
	for sent < n && tries < 1000 {
		k, err := b.send(fd, sent, n)
		if err != nil {
			if !transient(err) {
				return sent, err
			}
			tries++
		}
		sent += k
	}
	return sent, nil
}

// recv receives at least one message (or fails, with EAGAIN at the
// receive timeout) and returns how many; msgs[i].n holds their lengths.
func (b *batch) recv(fd int) (int, error) {
	if sysRecvmmsg == 0 {
		k, _, err := syscall.Recvfrom(fd, b.bufs[0], 0)
		if err != nil {
			return 0, err
		}
		b.msgs[0].n = uint32(k)
		return 1, nil
	}
	r, _, e := syscall.Syscall6(sysRecvmmsg, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), msgWaitForOne, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// transient reports send errors that a flood or burst rides over: a port
// not listening yet, a full local queue, a signal.
func transient(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR)
}

func timedOut(err error) bool { return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) }

func payloads(k, size int) [][]byte {
	bufs := make([][]byte, k)
	for i := range bufs {
		bufs[i] = make([]byte, size)
		copy(bufs[i], magic)
	}
	return bufs
}

func flood(to string, size int, d time.Duration) error {
	fd, err := udpSocket(to, "")
	if err != nil {
		return err
	}
	b := newBatch(payloads(64, size))
	var sent uint64
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		k, err := b.send(fd, 0, len(b.msgs))
		if err != nil && !transient(err) {
			return err
		}
		sent += uint64(k)
	}
	fmt.Printf("sent=%d seconds=%.3f\n", sent, time.Since(start).Seconds())
	return nil
}

func burst(to string, size, n int) error {
	fd, err := udpSocket(to, "")
	if err != nil {
		return err
	}
	if err := setBuf(fd, syscall.SO_SNDBUFFORCE); err != nil {
		return err
	}
	sent, err := newBatch(payloads(n, size)).sendAll(fd, n)
	fmt.Printf("sent=%d\n", sent)
	return err
}

func sink(listen string, expect int, idle, most time.Duration) error {
	fd, err := udpSocket("", listen)
	if err != nil {
		return err
	}
	if err := setBuf(fd, syscall.SO_RCVBUFFORCE); err != nil {
		return err
	}
	if err := setRecvTimeout(fd, 50*time.Millisecond); err != nil {
		return err
	}
	b := newBatch(payloads(256, 2048))
	var got uint64
	var first, last time.Time
	for start := time.Now(); ; {
		now := time.Now()
		if now.Sub(start) > most || (got > 0 && now.Sub(last) > idle) || (expect > 0 && got >= uint64(expect)) {
			break
		}
		k, err := b.recv(fd)
		if err != nil {
			if timedOut(err) {
				continue
			}
			return err
		}
		now = time.Now()
		for i := range k {
			if b.msgs[i].n >= uint32(len(magic)) && string(b.bufs[i][:len(magic)]) == magic {
				if got == 0 {
					first = now
				}
				got++
				last = now
			}
		}
	}
	fmt.Printf("received=%d span=%.6f\n", got, last.Sub(first).Seconds())
	return nil
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func echo(to string, size, n int, wait time.Duration) error {
	addr, err := netip.ParseAddr(to)
	if err != nil {
		return err
	}
	sa, err := sockaddr(netip.AddrPortFrom(addr, 0))
	if err != nil {
		return err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_ICMP)
	if err != nil {
		return err
	}
	if err := setBuf(fd, syscall.SO_SNDBUFFORCE); err != nil {
		return err
	}
	if err := setBuf(fd, syscall.SO_RCVBUFFORCE); err != nil {
		return err
	}
	if err := syscall.Connect(fd, sa); err != nil { // only packets from the target
		return err
	}
	if err := setRecvTimeout(fd, 50*time.Millisecond); err != nil {
		return err
	}
	id := uint16(os.Getpid())
	reqs := make([][]byte, n)
	for i := range reqs {
		p := make([]byte, 8+size)
		p[0] = 8 // echo request
		binary.BigEndian.PutUint16(p[4:], id)
		binary.BigEndian.PutUint16(p[6:], uint16(i))
		copy(p[8:], magic)
		binary.BigEndian.PutUint16(p[2:], checksum(p))
		reqs[i] = p
	}
	sent, err := newBatch(reqs).sendAll(fd, n)
	if err != nil {
		return err
	}
	seen := make([]bool, n)
	got := 0
	r := newBatch(payloads(256, 2048))
	for last := time.Now(); got < sent && time.Since(last) < wait; {
		k, err := r.recv(fd)
		if err != nil {
			if timedOut(err) {
				continue
			}
			return err
		}
		for i := range k {
			p := r.bufs[i][:r.msgs[i].n]
			if len(p) < 20 || len(p) < int(p[0]&0xf)*4+8 {
				continue
			}
			p = p[int(p[0]&0xf)*4:] // the IP header
			if p[0] != 0 || binary.BigEndian.Uint16(p[4:]) != id {
				continue // not an echo reply of ours
			}
			if seq := int(binary.BigEndian.Uint16(p[6:])); seq < n && !seen[seq] {
				seen[seq] = true
				got++
				last = time.Now()
			}
		}
	}
	fmt.Printf("sent=%d received=%d\n", sent, got)
	return nil
}
EOF
}
if want_test small || want_test burst; then
  log "go build pktgen (small-packet sender and receiver)"
  if write_pktgen && (cd "$WORK/pktgen" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go build -o "$WORK/bin/pktgen" .) >"$WORK/logs/pktgen-build.log" 2>&1; then
    PKTGEN=$WORK/bin/pktgen
  else
    SKIP_PKTGEN_REASON="pktgen build failed"
    tail -n 20 "$WORK/logs/pktgen-build.log" >&2
    log "small-packet and burst tests skipped: $SKIP_PKTGEN_REASON"
  fi
fi

# ---------------------------------------------------------------- namespaces
log "creating namespaces $NS_A / $NS_B"
ip netns add "$NS_A" || die "ip netns add $NS_A"
ip netns add "$NS_B" || die "ip netns add $NS_B"
ip link add "$VETH_A" type veth peer name "$VETH_B" || die "ip link add veth"
ip link set "$VETH_A" netns "$NS_A" || die "move $VETH_A"
ip link set "$VETH_B" netns "$NS_B" || die "move $VETH_B"
ip -n "$NS_A" link set lo up || die "lo up"
ip -n "$NS_B" link set lo up || die "lo up"
ip -n "$NS_A" addr add "$UL_A/24" dev "$VETH_A" || die "addr $UL_A"
ip -n "$NS_B" addr add "$UL_B/24" dev "$VETH_B" || die "addr $UL_B"
ip -n "$NS_A" link set "$VETH_A" up || die "veth up"
ip -n "$NS_B" link set "$VETH_B" up || die "veth up"
ip netns exec "$NS_B" ping -c 1 -W 2 "$UL_A" >/dev/null 2>&1 ||
  sleep 1
ip netns exec "$NS_B" ping -c 1 -W 2 "$UL_A" >/dev/null 2>&1 || die "veth does not pass traffic"

# iperf3 server for all paths, listening on every address of namespace a
start_iperf_server() {
  start_bg "$WORK/logs/iperf3-server.log" ip netns exec "$NS_A" iperf3 -s -p "$IPERF_PORT"
  IPERF_PID=$LAST_PID
  local i
  for ((i = 0; i < 50; i++)); do
    ip netns exec "$NS_A" ss -Hltn "sport = :$IPERF_PORT" 2>/dev/null | grep -q . && return 0
    alive "$IPERF_PID" || break
    sleep 0.1
  done
  die "iperf3 server did not start"
}
restart_iperf_server() {
  kill_pid "$IPERF_PID"
  start_iperf_server
}
start_iperf_server

# ---------------------------------------------------------------- measurements
# record ROUND PATH METRIC VALUE ("null" when missing)
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-null}" >>"$RESULTS"; }

# iperf TARGET OUTFILE ARGS...: run one iperf3 client test in namespace b.
# Sets BPS and BYTES from sum_received (BPS=null, BYTES=0 on failure).
# Must not run in a subshell: it may restart the iperf3 server.
BPS=null
BYTES=0
iperf() {
  local target=$1 out=$2 res; shift 2
  BPS=null
  BYTES=0
  if ! timeout --foreground $((${IPERF_SECONDS:-$BENCH_SECONDS} + 20)) \
    ip netns exec "$NS_B" iperf3 -c "$target" -p "$IPERF_PORT" -t "${IPERF_SECONDS:-$BENCH_SECONDS}" \
    --connect-timeout 5000 -J "$@" >"$out" 2>"$out.err"; then
    log "iperf3 -c $target $* failed: $(jq -r '.error // empty' "$out" 2>/dev/null | head -c 200)$(head -c 200 "$out.err")"
    restart_iperf_server
    return 1
  fi
  res=$(jq -r 'if .error then empty else "\(.end.sum_received.bits_per_second) \(.end.sum_received.bytes)" end' "$out" 2>/dev/null)
  if [[ -z $res ]]; then
    log "iperf3 -c $target $* failed: $(jq -r '.error // "no result"' "$out" 2>/dev/null | head -c 200)"
    return 1
  fi
  read -r BPS BYTES <<<"$res"
  BYTES=${BYTES%.*}
}

# ping_avg TARGET COUNT: average RTT in ms from namespace b, empty on failure
ping_avg() {
  ip netns exec "$NS_B" ping -q -n -c "$2" -i 0.05 -W 1 "$1" 2>/dev/null |
    awk -F'/' '/^(rtt|round-trip)/ {print $5}'
}

# cpu_ticks PID...: utime+stime summed over the PIDs, in clock ticks
cpu_ticks() {
  local p sum=0 stat rest f
  for p in "$@"; do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || return 1
    rest=${stat##*) }   # fields from 3 (state) on; comm may contain spaces
    read -r -a f <<<"$rest"
    sum=$((sum + f[11] + f[12]))   # fields 14 (utime) and 15 (stime)
  done
  echo "$sum"
}

# peak_rss_kib PID...: max VmHWM in KiB
peak_rss_kib() {
  local p v max=0
  for p in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null)
    [[ -n $v ]] || return 1
    ((v > max)) && max=$v
  done
  echo "$max"
}

# loss_on / loss_off: BENCH_LOSS_PCT% random drop on the veth of namespace a
# (input: client->server packets, output: server->client packets).
OFFLOAD_FEATURES=(tso off gso off tx-udp-segmentation off)
loss_on() {
  if [[ $BENCH_LOSS_OFFLOAD == off ]]; then
    ip netns exec "$NS_A" ethtool -K "$VETH_A" "${OFFLOAD_FEATURES[@]}" >/dev/null 2>&1
    ip netns exec "$NS_B" ethtool -K "$VETH_B" "${OFFLOAD_FEATURES[@]}" >/dev/null 2>&1
  fi
  ip netns exec "$NS_A" nft -f - <<EOF
table inet $NFT_TABLE {
  chain input {
    type filter hook input priority -300; policy accept;
    iifname "$VETH_A" numgen random mod 100 < $BENCH_LOSS_PCT counter drop
  }
  chain output {
    type filter hook output priority -300; policy accept;
    oifname "$VETH_A" numgen random mod 100 < $BENCH_LOSS_PCT counter drop
  }
}
EOF
}
loss_off() {
  ip netns exec "$NS_A" nft delete table inet "$NFT_TABLE" 2>/dev/null
  if [[ $BENCH_LOSS_OFFLOAD == off ]]; then
    ip netns exec "$NS_A" ethtool -K "$VETH_A" tso on gso on tx-udp-segmentation on >/dev/null 2>&1
    ip netns exec "$NS_B" ethtool -K "$VETH_B" tso on gso on tx-udp-segmentation on >/dev/null 2>&1
  fi
  return 0
}

# Per-path state of the current round, keyed by path name.
declare -A UP=()      # 1 while the path is up and its processes alive
declare -A TARGET=()  # address iperf3 and ping aim at
declare -A PPIDS=()   # the path's tunnel processes (space-separated)
declare -A CPU_T=()   # CPU ticks of those processes during the throughput tests
declare -A BYTES_T=() # bytes received in those tests

# path_alive ROUND PATH: is the path up with every tunnel process running?
# A dead process takes the path down for the rest of the round.
path_alive() {
  local round=$1 path=$2 p
  [[ ${UP[$path]:-0} == 1 ]] || return 1
  for p in ${PPIDS[$path]:-}; do
    if ! alive "$p"; then
      log "[$path] tunnel process $p died; skipping the rest of round $round"
      NOTES+=("$path: a tunnel process died during round $round; later tests of that round are n/a")
      UP[$path]=0
      return 1
    fi
  done
  return 0
}

# throughput ROUND PATH METRIC LABEL IPERF_ARGS...: one iperf3 test; the
# tunnel processes' CPU during it counts towards the path's CPU per GB.
throughput() {
  local round=$1 path=$2 metric=$3 label=$4
  shift 4
  path_alive "$round" "$path" || return 0
  local pids=() c0="" c1
  read -r -a pids <<<"${PPIDS[$path]:-}"
  if ((${#pids[@]})); then c0=$(cpu_ticks "${pids[@]}"); fi
  log "[$path] $label"
  iperf "${TARGET[$path]}" "$WORK/iperf/r${round}-${path}-${metric}.json" "$@"
  record "$round" "$path" "$metric" "$BPS"
  if [[ -n $c0 ]] && c1=$(cpu_ticks "${pids[@]}"); then
    CPU_T[$path]=$((${CPU_T[$path]:-0} + c1 - c0))
    BYTES_T[$path]=$((${BYTES_T[$path]:-0} + BYTES))
  fi
  sleep 1
}

# record_cpu ROUND PATH: CPU seconds per GB over the path's throughput tests.
record_cpu() {
  local round=$1 path=$2
  [[ $path == veth ]] && return 0
  if [[ -n ${CPU_T[$path]:-} ]] && ((${BYTES_T[$path]:-0} > 0)); then
    local cpu_s gb
    cpu_s=$(awk -v t="${CPU_T[$path]}" -v hz="$CLK_TCK" 'BEGIN {printf "%.4f", t / hz}')
    gb=$(awk -v b="${BYTES_T[$path]}" 'BEGIN {printf "%.6f", b / 1e9}')
    record "$round" "$path" cpu_seconds "$cpu_s"
    record "$round" "$path" gb_moved "$gb"
    record "$round" "$path" cpu_s_per_gb "$(awk -v c="$cpu_s" -v g="$gb" 'BEGIN {printf "%.4f", c / g}')"
  else
    record "$round" "$path" cpu_s_per_gb null
  fi
}

ping_idle() {
  local round=$1 path=$2
  path_alive "$round" "$path" || return 0
  log "[$path] ping idle"
  record "$round" "$path" ping_idle_ms "$(ping_avg "${TARGET[$path]}" "$BENCH_PINGS")"
}

ping_load() {
  local round=$1 path=$2
  path_alive "$round" "$path" || return 0
  log "[$path] ping under 1-stream load"
  local n=$(((BENCH_SECONDS * 1000 - 1500) / 50))
  ((n > BENCH_PINGS)) && n=$BENCH_PINGS
  ((n < 5)) && n=5
  local load_json="$WORK/iperf/r${round}-${path}-tcp1-load.json"
  timeout --foreground $((BENCH_SECONDS + 20)) \
    ip netns exec "$NS_B" iperf3 -c "${TARGET[$path]}" -p "$IPERF_PORT" -t "$BENCH_SECONDS" \
    --connect-timeout 5000 -J >"$load_json" 2>/dev/null &
  local load_pid=$!
  PIDS+=("$load_pid")
  sleep 1
  record "$round" "$path" ping_load_ms "$(ping_avg "${TARGET[$path]}" "$n")"
  if ! wait "$load_pid" || jq -e '.error' "$load_json" >/dev/null 2>&1; then
    log "[$path] load iperf3 failed"
    restart_iperf_server
  fi
  forget_pid "$load_pid"
  sleep 1
}

loss_test() {
  local round=$1 path=$2
  path_alive "$round" "$path" || return 0
  log "[$path] TCP 1 stream client->server, ${BENCH_LOSS_PCT}% loss"
  if loss_on; then
    iperf "${TARGET[$path]}" "$WORK/iperf/r${round}-${path}-tcp1-loss.json"
    record "$round" "$path" tcp1_loss_c2s_bps "$BPS"
    local drops
    drops=$(ip netns exec "$NS_A" nft -j list table inet "$NFT_TABLE" 2>/dev/null |
      jq '[.nftables[] | .rule? // empty | .expr[] | .counter? // empty | .packets] | add // 0' 2>/dev/null)
    record "$round" "$path" loss_dropped_packets "${drops:-null}"
  else
    log "[$path] could not install nft loss rule"
    record "$round" "$path" tcp1_loss_c2s_bps null
  fi
  loss_off
}

record_rss() {
  local round=$1 path=$2 pids=()
  path_alive "$round" "$path" || return 0
  read -r -a pids <<<"${PPIDS[$path]:-}"
  ((${#pids[@]})) && record "$round" "$path" peak_rss_kib "$(peak_rss_kib "${pids[@]}")"
  return 0
}

# ---------------------------------------------------------------- small packets
# pg_sink NS ADDR EXPECT MOST OUT: start a pktgen sink on ADDR:SMALL_PORT in
# NS (stop after EXPECT datagrams, 0: no limit; 1 s after the last one; or
# after MOST seconds) writing its result to OUT; SINK_PID is its PID. Fails
# if the sink does not come up.
SINK_PID=""
pg_sink() {
  local ns=$1 addr=$2 expect=$3 most=$4 out=$5 i
  start_bg "$out" ip netns exec "$ns" "$PKTGEN" sink -listen "$addr:$SMALL_PORT" \
    -expect "$expect" -idle 1s -seconds "$most"
  SINK_PID=$LAST_PID
  for ((i = 0; i < 50; i++)); do
    ip netns exec "$ns" ss -Hlun "sport = :$SMALL_PORT" 2>/dev/null | grep -qF "$addr:$SMALL_PORT" && return 0
    alive "$SINK_PID" || break
    sleep 0.1
  done
  log "pktgen sink on $addr did not start: $(head -c 200 "$out")"
  kill_pid "$SINK_PID"
  return 1
}

# pg_sink_wait MOST OUT: wait up to MOST seconds for the sink to finish and
# print its "RECEIVED SPAN" (nothing if it failed).
pg_sink_wait() {
  local most=$1 out=$2 i
  for ((i = 0; i < most * 10; i++)); do
    alive "$SINK_PID" || break
    sleep 0.1
  done
  kill_pid "$SINK_PID"
  sed -n 's/^received=\([0-9]*\) span=\([0-9.]*\)$/\1 \2/p' "$out"
}

# metrics_drops NS PORT: "QUEUE_FULL TUN_WRITE" drop counters of the tlsvpn
# daemon whose metrics are on 127.0.0.1:PORT in NS, "null null" if unread.
metrics_drops() {
  ip netns exec "$1" curl -s -m 2 "http://127.0.0.1:$2/metrics" 2>/dev/null | awk '
    /_dropped_packets_total\{reason="queue_full"\}/ {q = $2 + 0; n++}
    /_dropped_packets_total\{reason="tun_write"\}/ {w = $2 + 0; n++}
    END {if (n == 2) printf "%.0f %.0f\n", q, w; else print "null null"}'
}

# tx_dropped NS DEV: the device's TX dropped counter ("null" if unread)
tx_dropped() {
  local v
  v=$(ip -n "$1" -s -j link show dev "$2" 2>/dev/null | jq -r '.[0].stats64.tx.dropped // empty' 2>/dev/null)
  echo "${v:-null}"
}

# drop_counts PATH: "SRV_TXDROP CLI_TXDROP QUEUE_FULL TUN_WRITE", the last
# two summed over the tlsvpn daemons ("null" where a path has none).
drop_counts() {
  local path=$1 s c q=null w=null q1 w1 q2 w2
  s=$(tx_dropped "$NS_A" "${SDEV[$path]}")
  c=$(tx_dropped "$NS_B" "${CDEV[$path]}")
  if [[ -n ${MPORT_S[$path]:-} ]]; then
    read -r q1 w1 <<<"$(metrics_drops "$NS_A" "${MPORT_S[$path]}")"
    read -r q2 w2 <<<"$(metrics_drops "$NS_B" "${MPORT_C[$path]}")"
    if [[ $q1 != null && $q2 != null ]]; then q=$((q1 + q2)); w=$((w1 + w2)); fi
  fi
  echo "$s $c $q $w"
}

# add_drops KEY BEFORE AFTER: add the differences of two drop_counts to
# DROPS[KEY] (a value that could not be read stays null).
declare -A DROPS=()
add_drops() {
  local key=$1 bv=() av=() cur=() sums=() i
  read -r -a bv <<<"$2"
  read -r -a av <<<"$3"
  read -r -a cur <<<"${DROPS[$key]:-0 0 0 0}"
  for i in 0 1 2 3; do
    if [[ ${bv[$i]:-null} == null || ${av[$i]:-null} == null || ${cur[$i]} == null ]]; then
      sums+=(null)
    else
      sums+=($((cur[i] + av[i] - bv[i])))
    fi
  done
  DROPS[$key]="${sums[*]}"
}

# record_drops ROUND PATH PREFIX: record DROPS["PATH PREFIX"] as
# PREFIX_txdrop_server, _txdrop_client, _queue_full and _tun_write.
record_drops() {
  local round=$1 path=$2 m=$3 dv=()
  read -r -a dv <<<"${DROPS["$path $m"]:-null null null null}"
  record "$round" "$path" "${m}_txdrop_server" "${dv[0]}"
  record "$round" "$path" "${m}_txdrop_client" "${dv[1]}"
  if [[ -n ${MPORT_S[$path]:-} ]]; then
    record "$round" "$path" "${m}_queue_full" "${dv[2]}"
    record "$round" "$path" "${m}_tun_write" "${dv[3]}"
  fi
  unset 'DROPS["$path $m"]'
}

# small_test ROUND PATH DIR: UDP with BENCH_SMALL_SIZE-byte payloads, c2s
# (namespace b to the server's tunnel address) or s2c (namespace a to the
# client's), as fast as pktgen sends for BENCH_SMALL_SECONDS. Records
# udp64_DIR_pps (received packets over the longer of the sending time and
# the first-to-last span at the receiver), _sent, _received, _loss_pct
# and where the packets were dropped.
small_test() {
  local round=$1 path=$2 dir=$3 m="udp${BENCH_SMALL_SIZE}_$3"
  path_alive "$round" "$path" || return 0
  if [[ -z $PKTGEN ]]; then record "$round" "$path" "${m}_pps" null; return 0; fi
  local sns=$NS_B rns=$NS_A dst=${TARGET[$path]} label="client->server"
  if [[ $dir == s2c ]]; then sns=$NS_A rns=$NS_B dst=${CTARGET[$path]} label="server->client"; fi
  local out="$WORK/pktgen/r${round}-${path}-${m}" most=$((BENCH_SMALL_SECONDS + 15)) res sent secs recv span d0 d1
  log "[$path] UDP ${BENCH_SMALL_SIZE}-byte payloads $label, ${BENCH_SMALL_SECONDS}s"
  d0=$(drop_counts "$path")
  if ! pg_sink "$rns" "$dst" 0 "$most" "$out.sink"; then
    record "$round" "$path" "${m}_pps" null
    return 0
  fi
  res=$(timeout --foreground $((BENCH_SMALL_SECONDS + 10)) ip netns exec "$sns" "$PKTGEN" flood \
    -to "$dst:$SMALL_PORT" -size "$BENCH_SMALL_SIZE" -seconds "$BENCH_SMALL_SECONDS" 2>"$out.err")
  read -r recv span <<<"$(pg_sink_wait "$most" "$out.sink")"
  d1=$(drop_counts "$path")
  sent=$(sed -n 's/^sent=\([0-9]*\) .*/\1/p' <<<"$res")
  secs=$(sed -n 's/.* seconds=\([0-9.]*\)$/\1/p' <<<"$res")
  if [[ -z $sent || -z $secs || -z $recv ]]; then
    log "[$path] small-packet test failed: $(head -c 200 "$out.err")"
    record "$round" "$path" "${m}_pps" null
    return 0
  fi
  record "$round" "$path" "${m}_pps" "$(awk -v r="$recv" -v s="$span" -v t="$secs" 'BEGIN {if (s < t) s = t; printf "%.0f", r / s}')"
  record "$round" "$path" "${m}_sent" "$sent"
  record "$round" "$path" "${m}_received" "$recv"
  record "$round" "$path" "${m}_loss_pct" "$(awk -v s="$sent" -v r="$recv" 'BEGIN {if (s > 0) printf "%.3f", 100 * (s - r) / s; else print "null"}')"
  add_drops "$path $m" "$d0" "$d1"
  record_drops "$round" "$path" "$m"
  sleep 1
}

# Burst totals of the round, keyed "PATH KIND": packets sent, received,
# and the worst try's loss.
declare -A B_SENT=() B_RECV=() B_WORST=()
burst_add() { # burst_add PATH KIND SENT RECEIVED
  local k="$1 $2" loss
  B_SENT[$k]=$((${B_SENT[$k]:-0} + $3))
  B_RECV[$k]=$((${B_RECV[$k]:-0} + $4))
  loss=$(awk -v s="$3" -v r="$4" 'BEGIN {printf "%.3f", (s > 0 ? 100 * (s - r) / s : 0)}')
  if [[ -z ${B_WORST[$k]:-} ]] || awk -v a="$loss" -v b="${B_WORST[$k]}" 'BEGIN {exit !(a > b)}'; then
    B_WORST[$k]=$loss
  fi
}

# burst_udp ROUND PATH: BENCH_BURST datagrams at once from namespace a to
# the client's tunnel address, counted by a sink there.
burst_udp() {
  local round=$1 path=$2 k=burst_udp_s2c
  path_alive "$round" "$path" || return 0
  [[ -n $PKTGEN ]] || return 0
  local out="$WORK/pktgen/r${round}-${path}-$k" res sent recv span d0 d1
  d0=$(drop_counts "$path")
  pg_sink "$NS_B" "${CTARGET[$path]}" "$BENCH_BURST" 10 "$out.sink" || return 0
  res=$(timeout --foreground 20 ip netns exec "$NS_A" "$PKTGEN" burst \
    -to "${CTARGET[$path]}:$SMALL_PORT" -size "$BENCH_SMALL_SIZE" -n "$BENCH_BURST" 2>"$out.err")
  read -r recv span <<<"$(pg_sink_wait 12 "$out.sink")"
  d1=$(drop_counts "$path")
  sent=$(sed -n 's/^sent=\([0-9]*\)$/\1/p' <<<"$res")
  if [[ -z $sent || -z $recv ]]; then
    log "[$path] UDP burst failed: $(head -c 200 "$out.err")"
    return 0
  fi
  burst_add "$path" "$k" "$sent" "$recv"
  add_drops "$path $k" "$d0" "$d1"
}

# burst_echo ROUND PATH: BENCH_BURST ICMP echo requests (ping's default 56
# data bytes) at once from namespace b to the server's tunnel address; the
# replies are counted.
burst_echo() {
  local round=$1 path=$2 k=burst_echo
  path_alive "$round" "$path" || return 0
  [[ -n $PKTGEN ]] || return 0
  local out="$WORK/pktgen/r${round}-${path}-$k" res sent recv d0 d1
  d0=$(drop_counts "$path")
  res=$(timeout --foreground 20 ip netns exec "$NS_B" "$PKTGEN" echo \
    -to "${TARGET[$path]}" -size 56 -n "$BENCH_BURST" -wait 1s 2>"$out.err")
  d1=$(drop_counts "$path")
  sent=$(sed -n 's/^sent=\([0-9]*\) .*/\1/p' <<<"$res")
  recv=$(sed -n 's/.* received=\([0-9]*\)$/\1/p' <<<"$res")
  if [[ -z $sent || -z $recv ]]; then
    log "[$path] ICMP echo burst failed: $(head -c 200 "$out.err")"
    return 0
  fi
  burst_add "$path" "$k" "$sent" "$recv"
  add_drops "$path $k" "$d0" "$d1"
}

# burst_record ROUND PATH: the round's burst results of PATH.
burst_record() {
  local round=$1 path=$2 k key
  for k in burst_udp_s2c burst_echo; do
    key="$path $k"
    if ((${B_SENT[$key]:-0} > 0)); then
      record "$round" "$path" "${k}_loss_pct" "$(awk -v s="${B_SENT[$key]}" -v r="${B_RECV[$key]}" 'BEGIN {printf "%.3f", 100 * (s - r) / s}')"
      record "$round" "$path" "${k}_worst_loss_pct" "${B_WORST[$key]}"
      record "$round" "$path" "${k}_sent" "${B_SENT[$key]}"
      record "$round" "$path" "${k}_received" "${B_RECV[$key]}"
      record_drops "$round" "$path" "$k"
    else
      record "$round" "$path" "${k}_loss_pct" null
    fi
    unset 'B_SENT[$key]' 'B_RECV[$key]' 'B_WORST[$key]' 'DROPS[$key]'
  done
}

record_all_null() {
  local m
  for m in tcp1_c2s_bps tcp1_s2c_bps tcp4_c2s_bps ping_idle_ms ping_load_ms tcp1_loss_c2s_bps cpu_s_per_gb peak_rss_kib \
    "udp${BENCH_SMALL_SIZE}_c2s_pps" "udp${BENCH_SMALL_SIZE}_s2c_pps" burst_udp_s2c_loss_pct burst_echo_loss_pct; do
    record "$1" "$2" "$m" null
  done
}

# path_down PATH: stop the path's processes.
path_down() {
  local p
  for p in ${PPIDS[$1]:-}; do kill_pid "$p"; done
  PPIDS[$1]=""
  UP[$1]=0
}

# ---------------------------------------------------------------- paths
# up_PATH ROUND brings a path up: UP, TARGET and PPIDS are set on success;
# on failure the round's values of the path are recorded as n/a.
up_veth() {
  UP[veth]=1
  TARGET[veth]=$UL_A
  PPIDS[veth]=""
}
down_veth() { path_down veth; }

up_wg() {
  local round=$1 pids=()
  UP[wg]=0
  if [[ -n $SKIP_WG_REASON ]]; then record_all_null "$round" wg; return; fi
  [[ -d $WG_SOCK_DIR ]] || WG_SOCK_DIR_CREATED=1
  local k=$WORK/wg
  if [[ ! -f $k/a.key ]]; then
    (umask 077 && wg genkey >"$k/a.key" && wg genkey >"$k/b.key") || { record_all_null "$round" wg; return; }
    if ! { wg pubkey <"$k/a.key" >"$k/a.pub" && wg pubkey <"$k/b.key" >"$k/b.pub"; }; then record_all_null "$round" wg; return; fi
  fi
  local ns ifn
  for ns in a b; do
    if [[ $ns == a ]]; then ifn=$WG_IF_A; else ifn=$WG_IF_B; fi
    local nsname=$NS_A
    [[ $ns == b ]] && nsname=$NS_B
    start_bg "$WORK/logs/wg-$ns-r$round.log" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error \
      ip netns exec "$nsname" "$WORK/bin/wireguard" -f "$ifn"
    pids+=("$LAST_PID")
  done
  PPIDS[wg]="${pids[*]}"
  local i ok=0
  for ((i = 0; i < 100; i++)); do
    if [[ -S $WG_SOCK_DIR/$WG_IF_A.sock && -S $WG_SOCK_DIR/$WG_IF_B.sock ]]; then ok=1; break; fi
    if ! { alive "${pids[0]}" && alive "${pids[1]}"; }; then break; fi
    sleep 0.1
  done
  if ((ok)) &&
    ip netns exec "$NS_A" wg set "$WG_IF_A" listen-port 51820 private-key "$k/a.key" \
      peer "$(cat "$k/b.pub")" allowed-ips "$WG_B/32" endpoint "$UL_B:51820" &&
    ip netns exec "$NS_B" wg set "$WG_IF_B" listen-port 51820 private-key "$k/b.key" \
      peer "$(cat "$k/a.pub")" allowed-ips "$WG_A/32" endpoint "$UL_A:51820" &&
    ip -n "$NS_A" addr add "$WG_A/24" dev "$WG_IF_A" &&
    ip -n "$NS_B" addr add "$WG_B/24" dev "$WG_IF_B" &&
    ip -n "$NS_A" link set "$WG_IF_A" mtu 1420 up &&
    ip -n "$NS_B" link set "$WG_IF_B" mtu 1420 up; then
    ok=0
    for ((i = 0; i < BENCH_TUNNEL_WAIT * 2; i++)); do
      if ip netns exec "$NS_B" ping -c 1 -W 1 "$WG_A" >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.5
    done
  else
    ok=0
  fi
  if ((ok)); then
    log "[wg] up (pids ${PPIDS[wg]})"
    UP[wg]=1
    TARGET[wg]=$WG_A
  else
    log "[wg] tunnel did not come up"
    NOTES+=("wireguard-go: tunnel did not come up in round $round")
    tail -n 10 "$WORK/logs/wg-"*"-r$round.log" >&2
    record_all_null "$round" wg
    down_wg
  fi
}
down_wg() {
  path_down wg
  rm -f "$WG_SOCK_DIR/$WG_IF_A.sock" "$WG_SOCK_DIR/$WG_IF_B.sock"
}

# log_reason LINE: the reason="..." attribute of a log line (text or JSON)
log_reason() {
  sed -n -e 's/.*"reason":"\([^"]*\)".*/\1/p' -e 't' -e 's/.*reason="\([^"]*\)".*/\1/p' -e 't' \
    -e 's/.*reason=\([^ ]*\).*/\1/p' <<<"$1"
}

# data_phase LOGFILE: which AES-GCM a tunneld/tunnelc log says its data phase
# uses, from the line it logs at start (text or JSON log format).
data_phase() {
  local logf=$1 line reason msg
  if line=$(grep -F -m1 -e "--own-aes-gcm: tlsvpn's own AES-GCM cannot run here" "$logf" 2>/dev/null); then
    reason=$(log_reason "$line")
    echo "Go's AES-GCM: --own-aes-gcm cannot run here (reason: ${reason:-see log})"
  elif grep -qF "record layer with tlsvpn's own AES-GCM" "$logf" 2>/dev/null; then
    echo "tlsvpn's own AES-GCM"
  elif grep -qF "record layer with Go's AES-GCM" "$logf" 2>/dev/null; then
    echo "Go's AES-GCM"
  elif line=$(grep -F -m1 "data phase: " "$logf" 2>/dev/null); then
    msg=$(grep -o 'data phase: [^"]*' <<<"$line")
    reason=$(log_reason "$line")
    echo "${msg#data phase: }${reason:+ (reason: $reason)}"
  else
    echo "unknown (no \"data phase:\" line in the log)"
  fi
}

# check_data_phase PATH SERVER_LOG CLIENT_LOG: note which AES-GCM both
# daemons of a tlsvpn path use; once per path, again only if it changes.
check_data_phase() {
  local path=$1 slog=$2 clog=$3 s c want_s note
  s=$(data_phase "$slog")
  c=$(data_phase "$clog")
  log "[$path] data phase: tunneld: $s; tunnelc: $c"
  [[ ${DATA_PHASE["$path tunneld"]:-} == "$s" && ${DATA_PHASE["$path tunnelc"]:-} == "$c" ]] && return 0
  DATA_PHASE["$path tunneld"]=$s
  DATA_PHASE["$path tunnelc"]=$c
  want_s="Go's AES-GCM"
  [[ $path == tlsown ]] && want_s="tlsvpn's own AES-GCM"
  if [[ $s == "$c" ]]; then note="tunneld and tunnelc: $s"; else note="tunneld: $s; tunnelc: $c"; fi
  if [[ $s == "$want_s" && $c == "$want_s" ]]; then
    NOTES+=("$path AES-GCM: $note")
  else
    [[ $path == tlsown ]] && note="$note; so the tlsvpn --own-aes-gcm column does not measure the own AES-GCM"
    NOTES+=("NOTE: $path AES-GCM: $note (expected $want_s on both)")
  fi
}

# up_tls ROUND PATH PORT SUBNET SERVER_IP CLIENT_IP TUN_S TUN_C [FLAG...]:
# one tunneld (namespace a, UL_A:PORT, SUBNET, TUN_S) and one tunnelc
# (namespace b, TUN_C) with FLAG... on both, then TUNNEL_FLAGS_SERVER /
# TUNNEL_FLAGS_CLIENT. Up when CLIENT_IP is on TUN_C and SERVER_IP answers.
up_tls() {
  local round=$1 path=$2 port=$3 subnet=$4 srv_ip=$5 cli_ip=$6 tun_s=$7 tun_c=$8
  shift 8
  local extra=("$@") pids=()
  UP[$path]=0
  if [[ -n $SKIP_TLSVPN_REASON ]]; then record_all_null "$round" "$path"; return; fi
  local D=$WORK/pki sflags cflags tag=""
  [[ $path != tlsvpn ]] && tag="-$path"
  local slog="$WORK/logs/tunneld$tag-r$round.log" clog="$WORK/logs/tunnelc$tag-r$round.log"
  read -r -a sflags <<<"$TUNNEL_FLAGS_SERVER"
  read -r -a cflags <<<"$TUNNEL_FLAGS_CLIENT"
  start_bg "$slog" ip netns exec "$NS_A" "$TUNNELD" \
    --listen "$UL_A:$port" --cert "$D/server.crt" --key "$D/server.key" --ca "$D/ca.crt" \
    --subnet "$subnet" --tun "$tun_s" --state-dir "$WORK/state$tag-r$round" --control "" \
    --metrics "127.0.0.1:${MPORT_S[$path]}" "${extra[@]}" "${sflags[@]}"
  pids=("$LAST_PID")
  PPIDS[$path]="${pids[*]}"
  # wait for the listener before starting the client
  local i ok=0
  for ((i = 0; i < BENCH_TUNNEL_WAIT * 10; i++)); do
    ip netns exec "$NS_A" ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && { ok=1; break; }
    alive "${pids[0]}" || break
    sleep 0.1
  done
  if ((ok)); then
    start_bg "$clog" ip netns exec "$NS_B" "$TUNNELC" \
      --server "$UL_A:$port" --cert "$D/client.crt" --key "$D/client.key" --ca "$D/ca.crt" \
      --tun "$tun_c" --control "" --metrics "127.0.0.1:${MPORT_C[$path]}" "${extra[@]}" "${cflags[@]}"
    pids+=("$LAST_PID")
    PPIDS[$path]="${pids[*]}"
    ok=0
    for ((i = 0; i < BENCH_TUNNEL_WAIT * 2; i++)); do
      if ! { alive "${pids[0]}" && alive "${pids[1]}"; }; then break; fi
      if ip -n "$NS_B" -4 addr show dev "$tun_c" 2>/dev/null | grep -qF "inet $cli_ip/" &&
        ip netns exec "$NS_B" ping -c 1 -W 1 "$srv_ip" >/dev/null 2>&1; then
        ok=1
        break
      fi
      sleep 0.5
    done
  fi
  if ((ok)); then
    log "[$path] up (pids ${PPIDS[$path]})"
    UP[$path]=1
    TARGET[$path]=$srv_ip
    check_data_phase "$path" "$slog" "$clog"
  else
    log "[$path] tunnel did not come up within ${BENCH_TUNNEL_WAIT}s"
    NOTES+=("$path: tunnel did not come up in round $round")
    local f
    for f in "$slog" "$clog"; do
      [[ -f $f ]] && { log "--- $(basename "$f")"; tail -n 15 "$f" >&2; }
    done
    record_all_null "$round" "$path"
    path_down "$path"
  fi
}

# tlsvpn: the default crypto (Go's AES-GCM)
up_tlsvpn() { up_tls "$1" tlsvpn "$TV_PORT" "$TV_SUBNET" "$TV_S" "$TV_C" "$TV_IF_S" "$TV_IF_C"; }
down_tlsvpn() { path_down tlsvpn; }
# tlsown: tlsvpn's own AES-GCM on both sides
up_tlsown() { up_tls "$1" tlsown "$TO_PORT" "$TO_SUBNET" "$TO_S" "$TO_C" "$TO_IF_S" "$TO_IF_C" --own-aes-gcm; }
down_tlsown() { path_down tlsown; }

# ---------------------------------------------------------------- rounds
# Every path of a round is up at once (an idle tunnel costs nothing), and
# each test runs on every path back to back before the next test, so the
# values compared in a ratio are measured seconds apart rather than a
# minute or more: this machine's speed drifts over minutes.
ORDERS_JSON="[]"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  order=("${PATHS_REQ[@]}")
  if ((round % 2 == 0)); then
    order=()
    for ((i = ${#PATHS_REQ[@]} - 1; i >= 0; i--)); do order+=("${PATHS_REQ[$i]}"); done
  fi
  log "round $round/$BENCH_ROUNDS: ${order[*]}"
  ORDERS_JSON=$(jq -c --arg o "${order[*]}" '. + [$o | split(" ")]' <<<"$ORDERS_JSON")
  CPU_T=()
  BYTES_T=()
  for p in "${order[@]}"; do "up_$p" "$round"; done
  if want_test tcp; then
    for p in "${order[@]}"; do throughput "$round" "$p" tcp1_c2s_bps "TCP 1 stream client->server"; done
    for p in "${order[@]}"; do throughput "$round" "$p" tcp1_s2c_bps "TCP 1 stream server->client" -R; done
    for p in "${order[@]}"; do throughput "$round" "$p" tcp4_c2s_bps "TCP 4 streams client->server" -P 4; done
    for p in "${order[@]}"; do record_cpu "$round" "$p"; done
  fi
  if want_test ping; then
    for p in "${order[@]}"; do ping_idle "$round" "$p"; done
    for p in "${order[@]}"; do ping_load "$round" "$p"; done
  fi
  if want_test loss; then
    for p in "${order[@]}"; do loss_test "$round" "$p"; done
  fi
  # RSS before the small-packet tests, so that it stays comparable with
  # runs from before they existed
  for p in "${order[@]}"; do record_rss "$round" "$p"; done
  if want_test small; then
    for p in "${order[@]}"; do small_test "$round" "$p" c2s; done
    for p in "${order[@]}"; do small_test "$round" "$p" s2c; done
  fi
  if want_test burst; then
    for ((try = 1; try <= BENCH_BURST_TRIES; try++)); do
      log "bursts of $BENCH_BURST packets, try $try/$BENCH_BURST_TRIES"
      for p in "${order[@]}"; do burst_udp "$round" "$p"; sleep 0.2; done
      for p in "${order[@]}"; do burst_echo "$round" "$p"; sleep 0.2; done
    done
    for p in "${order[@]}"; do burst_record "$round" "$p"; done
  fi
  for p in "${order[@]}"; do "down_$p"; done
done

# ---------------------------------------------------------------- pairs
# Short tests in pairs, wireguard-go next to tlsvpn and (when in BENCH_PATHS)
# tlsvpn --own-aes-gcm, the order rotating each pair (with three tunnels,
# pairs 4-6 rotate the reversed order, so that over six pairs each tunnel
# runs before each other one as often as after it): each ratio of a pair
# compares values measured seconds apart, and the spread of the ratios
# shows how far one full run can be trusted.
PAIRS_TSV="$WORK/pairs.tsv"
: >"$PAIRS_TSV"
if ((BENCH_PAIRS > 0)); then
  PAIR_PATHS=(wg tlsvpn)
  want tlsown && PAIR_PATHS+=(tlsown)
  log "pairs: $BENCH_PAIRS x ${BENCH_PAIR_SECONDS}s, ${PAIR_PATHS[*]}"
  # up_* record n/a values for a failed round; those belong to no round here
  rounds_results=$RESULTS
  RESULTS="$WORK/pairs-discard.tsv"
  for p in "${PAIR_PATHS[@]}"; do "up_$p" pairs; done
  RESULTS=$rounds_results
  if [[ ${UP[wg]:-0} == 1 && ${UP[tlsvpn]:-0} == 1 ]]; then
    if want tlsown && [[ ${UP[tlsown]:-0} != 1 ]]; then
      NOTES+=("pairs: tlsown did not come up; pairs measured without it")
    fi
    IPERF_SECONDS=$BENCH_PAIR_SECONDS
    n=${#PAIR_PATHS[@]}
    cycle=$n
    ((n > 2)) && cycle=$((2 * n))
    for ((i = 1; i <= BENCH_PAIRS; i++)); do
      k=$(((i - 1) % cycle))
      base=("${PAIR_PATHS[@]}")
      if ((k >= n)); then
        base=()
        for ((j = n - 1; j >= 0; j--)); do base+=("${PAIR_PATHS[$j]}"); done
        k=$((k - n))
      fi
      order=()
      for ((j = 0; j < n; j++)); do order+=("${base[$(((k + j) % n))]}"); done
      for t in c2s s2c; do
        args=()
        [[ $t == s2c ]] && args=(-R)
        for p in "${order[@]}"; do
          path_alive pairs "$p" || continue
          iperf "${TARGET[$p]}" "$WORK/iperf/pair${i}-${p}-${t}.json" "${args[@]}"
          printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$t" "$p" "$BPS" "${order[*]}" >>"$PAIRS_TSV"
        done
      done
      log "pair $i/$BENCH_PAIRS done (${order[*]})"
    done
    unset IPERF_SECONDS
  else
    NOTES+=("pairs: a tunnel did not come up; no pairs measured")
  fi
  for p in "${PAIR_PATHS[@]}"; do "down_$p"; done
fi

# ---------------------------------------------------------------- report
META=$(jq -n \
  --arg nproc "$NPROC" --arg cpu "$CPU_MODEL" --arg kernel "$KERNEL" --arg go "$GO_VERSION" \
  --arg iperf "$IPERF_VERSION" --arg wg "$WG_VERSION" \
  --arg seconds "$BENCH_SECONDS" --arg rounds "$BENCH_ROUNDS" --arg pings "$BENCH_PINGS" \
  --arg loss "$BENCH_LOSS_PCT" --arg lossoff "$BENCH_LOSS_OFFLOAD" \
  --arg fs "$TUNNEL_FLAGS_SERVER" --arg fc "$TUNNEL_FLAGS_CLIENT" \
  --arg paths "$BENCH_PATHS" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg tests "$BENCH_TESTS" --arg ssecs "$BENCH_SMALL_SECONDS" --arg ssize "$BENCH_SMALL_SIZE" \
  --arg burst "$BENCH_BURST" --arg btries "$BENCH_BURST_TRIES" --arg pktgen "${PKTGEN:+pktgen (built from bench.sh)}" \
  --argjson orders "$ORDERS_JSON" \
  '{date: $date,
    machine: {nproc: ($nproc | tonumber), cpu_model: $cpu, kernel: $kernel, go: $go},
    tools: {iperf3: $iperf, wireguard_go: $wg, small_packets: $pktgen},
    config: {paths: ($paths | split(" ") | map(select(length > 0))), seconds: ($seconds | tonumber),
             tests: ($tests | split(" ") | map(select(length > 0))),
             rounds: ($rounds | tonumber), pings: ($pings | tonumber), loss_pct: ($loss | tonumber),
             loss_offload: $lossoff, tunnel_flags_server: $fs, tunnel_flags_client: $fc,
             small_seconds: ($ssecs | tonumber), small_payload_bytes: ($ssize | tonumber),
             burst_packets: ($burst | tonumber), burst_tries: ($btries | tonumber)},
    round_orders: $orders}')

jq -R -s --argjson meta "$META" '
  def median: map(select(. != null)) | sort |
    if length == 0 then null
    elif length % 2 == 1 then .[(length - 1) / 2]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  (split("\n") | map(select(length > 0) | split("\t") |
     {round: (.[0] | tonumber), path: .[1], metric: .[2],
      value: (if .[3] == "null" or .[3] == "" then null else (.[3] | tonumber) end)})) as $rows
  | $meta + {
      rounds: ($rows | group_by(.round) | map({
        round: .[0].round,
        order: $meta.round_orders[.[0].round - 1],
        values: (group_by(.path) | map({key: .[0].path, value: (map({key: .metric, value: .value}) | from_entries)}) | from_entries)})),
      median: ($rows | group_by(.path) | map({key: .[0].path,
        value: (group_by(.metric) | map({key: .[0].metric, value: (map(.value) | median)}) | from_entries)}) | from_entries)
    }' "$RESULTS" >"$WORK/bench.json" || die "building JSON failed"
PAIRS_JSON=$(jq -R -s '
  def r(a; b): if a and b and b > 0 then a / b else null end;
  split("\n") | map(select(length > 0) | split("\t") |
    {pair: (.[0] | tonumber), test: .[1], path: .[2],
     bps: (if .[3] == "null" then null else (.[3] | tonumber) end),
     order: ((.[4] // "") | split(" ") | map(select(length > 0)))})
  | group_by([.pair, .test]) | map({pair: .[0].pair, test: .[0].test, order: .[0].order,
      wg: (map(select(.path == "wg")) | .[0].bps // null),
      tlsvpn: (map(select(.path == "tlsvpn")) | .[0].bps // null),
      tlsown: (map(select(.path == "tlsown")) | .[0].bps // null)})
  | map(. + {ratio: r(.tlsvpn; .wg), ratio_own_wg: r(.tlsown; .wg), ratio_tlsvpn_own: r(.tlsvpn; .tlsown)})' "$PAIRS_TSV") ||
  die "building the pairs JSON failed"
# which AES-GCM each tlsvpn daemon reported: {"tlsvpn": {"tunneld": ..., "tunnelc": ...}, ...}
DATA_PHASE_JSON="{}"
for k in "${!DATA_PHASE[@]}"; do
  DATA_PHASE_JSON=$(jq -c --arg p "${k% *}" --arg d "${k#* }" --arg v "${DATA_PHASE[$k]}" \
    '.[$p][$d] = $v' <<<"$DATA_PHASE_JSON") || die "building the data phase JSON failed"
done
if ! jq --argjson pairs "$PAIRS_JSON" --argjson dp "$DATA_PHASE_JSON" \
  '. + {pairs: $pairs, aes_gcm: $dp}' "$WORK/bench.json" >"$WORK/bench.json.tmp" ||
  ! mv "$WORK/bench.json.tmp" "$WORK/bench.json"; then
  die "building JSON failed"
fi
cp "$WORK/bench.json" "$BENCH_JSON" || die "cannot write $BENCH_JSON"
log "raw values written to $BENCH_JSON"

# markdown
fmt() { # fmt VALUE DECIMALS SCALE
  if [[ -z $1 || $1 == null ]]; then echo "n/a"; else awk -v v="$1" -v d="$2" -v s="$3" 'BEGIN {printf "%.*f", d, v / s}'; fi
}
ratio() {
  if [[ -z $1 || $1 == null || -z $2 || $2 == null ]]; then echo "n/a"
  else awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "n/a"; else printf "%.2f", a / b}'; fi
}
med() { jq -r --arg p "$1" --arg m "$2" '.median[$p][$m] // "null"' "$WORK/bench.json"; }
ran() { want "$1"; }

echo "## tlsvpn benchmark"
echo
echo "- date: $(jq -r .date "$WORK/bench.json")"
echo "- nproc: $NPROC, CPU: $CPU_MODEL"
echo "- kernel: $KERNEL"
echo "- $GO_VERSION"
echo "- $IPERF_VERSION; wireguard-go ${WG_VERSION:-n/a}"
if want tlsvpn || want tlsown; then
  if [[ -n $TUNNEL_BIN_DIR ]]; then
    echo "- tlsvpn binaries: $TUNNEL_BIN_DIR"
  else
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null) ]] && rev="$rev + uncommitted changes"
    echo "- tlsvpn built from the working tree ($rev)"
  fi
fi
echo "- $BENCH_ROUNDS round(s) x ${BENCH_SECONDS}s per iperf3 test, medians; round orders: $(jq -r '[.round_orders[] | join(",")] | join(" / ")' "$WORK/bench.json")"
echo "- tests: $BENCH_TESTS"
echo "- TUNNEL_FLAGS_SERVER='$TUNNEL_FLAGS_SERVER' TUNNEL_FLAGS_CLIENT='$TUNNEL_FLAGS_CLIENT'"
want tlsown && echo "- tlsvpn --own-aes-gcm (tlsown): a second tunneld/tunnelc pair with --own-aes-gcm on both sides"
want_test loss && echo "- loss test: nft numgen ${BENCH_LOSS_PCT}% drop each way on the underlay veth (offloads ${BENCH_LOSS_OFFLOAD} during the test)"
want_test tcp && echo "- CPU s/GB: utime+stime of both tunnel processes over the three throughput tests / GB received"
echo "- RSS: max VmHWM of the two tunnel processes, read before the small-packet tests"
if want_test small; then
  echo "- small packets: UDP with ${BENCH_SMALL_SIZE}-byte payloads sent by pktgen (sendmmsg) as fast as it can for ${BENCH_SMALL_SECONDS}s, packets per second received (recvmmsg); sent, received and loss at that offer are in the JSON"
fi
if want_test burst; then
  echo "- bursts: $BENCH_BURST_TRIES x $BENCH_BURST packets at once per path and round: UDP (${BENCH_SMALL_SIZE}-byte payloads) from the server side to the client's tunnel address, and ICMP echo requests (56 data bytes) from the client to the server's tunnel address (replies counted); loss over all tries; TX drops of the tunnel devices and tlsvpn's drop counters per burst kind in the JSON"
fi
[[ -n $SKIP_PKTGEN_REASON ]] && { want_test small || want_test burst; } && echo "- small-packet and burst tests skipped: $SKIP_PKTGEN_REASON"
echo "- ratios are of the medians shown: for throughput and packets/s > 1 favours the numerator, for RTT, CPU, RSS and loss < 1 does"
want tlsvpn && want tlsown &&
  echo "- tlsvpn/own is the cost of the default crypto (Go's AES-GCM) against --own-aes-gcm: for throughput < 1 means the default is slower, for RTT, CPU and RSS > 1 means the default costs more"
[[ -n $SKIP_WG_REASON ]] && want wg && echo "- wireguard-go skipped: $SKIP_WG_REASON"
[[ -n $SKIP_TLSVPN_REASON ]] && { want tlsvpn || want tlsown; } && echo "- tlsvpn skipped: $SKIP_TLSVPN_REASON"
for n in "${NOTES[@]}"; do echo "- $n"; done
echo
echo "| test | veth | wireguard-go | tlsvpn | tlsvpn --own-aes-gcm | tlsvpn/wireguard-go | own/wireguard-go | tlsvpn/own | tlsvpn/veth |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
# rcol NUM DEN NUMPATH DENPATH: a ratio column, "-" when either path was not run
rcol() {
  if ran "$3" && ran "$4"; then ratio "$1" "$2"; else echo "-"; fi
}
row() { # row LABEL METRIC DECIMALS SCALE TUNNEL_ONLY
  local label=$1 m=$2 d=$3 s=$4 tonly=${5:-0}
  local v w t o cv cw ct co r_tw r_ow r_to r_tv
  v=$(med veth "$m"); w=$(med wg "$m"); t=$(med tlsvpn "$m"); o=$(med tlsown "$m")
  if ran veth && ((!tonly)); then cv=$(fmt "$v" "$d" "$s"); else cv="-"; fi
  if ran wg; then cw=$(fmt "$w" "$d" "$s"); else cw="-"; fi
  if ran tlsvpn; then ct=$(fmt "$t" "$d" "$s"); else ct="-"; fi
  if ran tlsown; then co=$(fmt "$o" "$d" "$s"); else co="-"; fi
  r_tw=$(rcol "$t" "$w" tlsvpn wg)
  r_ow=$(rcol "$o" "$w" tlsown wg)
  r_to=$(rcol "$t" "$o" tlsvpn tlsown)
  if ((tonly)); then r_tv="-"; else r_tv=$(rcol "$t" "$v" tlsvpn veth); fi
  echo "| $label | $cv | $cw | $ct | $co | $r_tw | $r_ow | $r_to | $r_tv |"
}
if want_test tcp; then
  row "TCP 1 stream client→server (Gbit/s)" tcp1_c2s_bps 2 1e9
  row "TCP 1 stream server→client (Gbit/s)" tcp1_s2c_bps 2 1e9
  row "TCP 4 streams client→server (Gbit/s)" tcp4_c2s_bps 2 1e9
fi
if want_test ping; then
  row "ping RTT idle, avg (ms)" ping_idle_ms 3 1
  row "ping RTT under 1-stream load, avg (ms)" ping_load_ms 3 1
fi
want_test loss && row "TCP 1 stream client→server, ${BENCH_LOSS_PCT}% loss (Gbit/s)" tcp1_loss_c2s_bps 2 1e9
want_test tcp && row "CPU seconds per GB (tunnel processes)" cpu_s_per_gb 2 1 1
row "peak RSS, max of two (MiB)" peak_rss_kib 1 1024 1
if want_test small; then
  row "UDP ${BENCH_SMALL_SIZE} B client→server (kpackets/s received)" "udp${BENCH_SMALL_SIZE}_c2s_pps" 1 1e3
  row "UDP ${BENCH_SMALL_SIZE} B server→client (kpackets/s received)" "udp${BENCH_SMALL_SIZE}_s2c_pps" 1 1e3
fi
if want_test burst; then
  row "burst of $BENCH_BURST UDP server→client, lost (%)" burst_udp_s2c_loss_pct 1 1
  row "burst of $BENCH_BURST ICMP echoes client→server, lost (%)" burst_echo_loss_pct 1 1
fi

if ((BENCH_PAIRS > 0)); then
  pair_ratios=("ratio tlsvpn/wireguard-go")
  if want tlsown; then
    pair_ratios+=("ratio_own_wg own/wireguard-go" "ratio_tlsvpn_own tlsvpn/own")
    what="wireguard-go, tlsvpn and tlsvpn --own-aes-gcm (order rotating each pair)"
  else
    what="wireguard-go and tlsvpn (order alternating)"
  fi
  echo
  echo "Paired tests: $BENCH_PAIRS pairs of ${BENCH_PAIR_SECONDS}-second 1-stream tests on $what, ratios per pair:"
  echo
  echo "| test | ratio | per pair | median | mean |"
  echo "|---|---|---|---:|---:|"
  for t in c2s s2c; do
    label="client→server"
    [[ $t == s2c ]] && label="server→client"
    for pr in "${pair_ratios[@]}"; do
      jq -r --arg t "$t" --arg name "$label" --arg key "${pr%% *}" --arg rname "${pr#* }" '
        [.pairs[] | select(.test == $t) | .[$key] | select(. != null)] as $r
        | if ($r | length) == 0 then "| \($name) | \($rname) | n/a | n/a | n/a |"
          else ($r | sort) as $s
          | "| \($name) | \($rname) | \($r | map(. * 100 | round / 100 | tostring) | join(" ")) | \(
              if ($s | length) % 2 == 1 then $s[($s | length - 1) / 2]
              else ($s[($s | length) / 2 - 1] + $s[($s | length) / 2]) / 2 end | . * 100 | round / 100) | \(
              ($r | add / length) * 100 | round / 100) |" end' "$WORK/bench.json"
    done
  done
fi
