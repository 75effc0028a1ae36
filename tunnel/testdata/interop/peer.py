#!/usr/bin/env python3
"""A foreign tlsvpn peer on OpenSSL, for tunnel/interop_test.go.

What it is: a second, independent implementation of the tlsvpn wire
protocol, written from docs/PROTOCOL.md only (frames, HELLO, CONFIG, DATA,
PING/PONG, CLOSE), on TLS 1.3 from OpenSSL through Python's ssl module. The
Go tests run it against our real tunnel.Server (--role client) or our real
tunnel.Client (--role server), so that the project's own TLS 1.3 record
layer, which takes over the data phase from crypto/tls, is checked against
a TLS stack that is not Go's. It is a test peer, not a usable VPN: it has no
TUN device; it sends and checks IPv4/UDP packets built from a shared
recipe (payload() and udp4() below, mirrored by interopPayload and
tunneltest.UDP4 in interop_test.go). Every frame the Go side sends is
checked as it is read: its length against section 2's limits, and the E
bit on each control frame (HELLO, CONFIG, PING, PONG, CLOSE).

Standard library and ctypes only (ossl.py reaches the two OpenSSL functions
that the ssl module lacks). It only talks to 127.0.0.1: as a client to
the port given by --port, as a server on a port it picks (printed).

TLS settings that Python does not expose (cipher suite, record padding)
come from the OpenSSL config file the test passes in OPENSSL_CONF; the
peer checks their effect itself (--expect-cipher, --expect-padding).

Conversation with the test (one line each way; "k=v" fields):

  stdout  listen port=N              (--role server, before accepting)
          tls cipher=.. version=.. alpn=.. peer_cn=.. tickets_sent=N tickets_recv=N
          hello caps=0x.. software=..        (--role server: the client's HELLO)
          config addr4=.. server4=.. mtu=.. keepalive_ms=.. caps=0x..   (--role client)
          ready
          ok <command> <counters>    after each command
          FAIL <message>             then exit status 1 (details on stderr)
  stdin   send N [PER]   send N DATA frames, PER per write (E on each write's last)
          recv N         read N DATA frames and check them byte for byte
          ping           send PING, wait for the PONG with the same 8 bytes
          ebit           DATA without E, then PING with E, in one write; wait for PONG
          keyupdate 0|1  queue a KeyUpdate (update_not_requested | update_requested)
          ticket         queue one more NewSessionTicket (--role server)
          stats          report the counters
          close          send CLOSE normal, expect the CLOSE answer, then close_notify

The counters, in every "ok" line: sent/received DATA packets (tx, rx),
KeyUpdates sent and received and how many of the received ones requested
an update (ku_sent, ku_recv, ku_recv_req), NewSessionTickets, encrypted
records written and read, records written under the current sending key
(records_key), the largest record lengths written and read (max_sent,
max_recv), and written records that were not padded.

Every socket operation has a timeout (--timeout) and the whole run a
deadline (--deadline): the peer never hangs.
"""

import argparse
import ipaddress
import os
import signal
import socket
import ssl
import struct
import sys
import time

import ossl

ALPN = "tlsvpn/1"

# Frame types (docs/PROTOCOL.md section 2).
DATA, DATA_GSO, HELLO, CONFIG, PING, PONG, CLOSE = 0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14
END = 0x80
NAMES = {DATA: "DATA", DATA_GSO: "DATA_GSO", HELLO: "HELLO", CONFIG: "CONFIG",
         PING: "PING", PONG: "PONG", CLOSE: "CLOSE"}
CONTROL = (HELLO, CONFIG, PING, PONG, CLOSE)
# Payload length limits per type, checked before reading the payload.
LIMITS = {DATA: (20, 65535), DATA_GSO: (28, 65543), HELLO: (1, 16384), CONFIG: (1, 16384),
          PING: (8, 8), PONG: (8, 8), CLOSE: (2, 16384)}

CAP_GSO = 1 << 0
CONTROL_VERSION = 1

# TLS record and handshake constants for the message callback.
CT_APPLICATION_DATA = 23
CT_HANDSHAKE = 22
CT_HEADER = 0x100  # OpenSSL's pseudo content type for record headers
HS_NEW_SESSION_TICKET = 4
HS_FINISHED = 20
HS_KEY_UPDATE = 24
TAG_LEN = 16  # all three TLS 1.3 AEADs
MAX_INNER = 16384 + 1  # largest TLSInnerPlaintext: content + type byte

# The packet recipe, shared with interop_test.go (interopPayload): payload
# sizes cycle through SIZES; "P" packets go from this peer to the Go side,
# "G" packets from the Go side to this peer.
SIZES = (0, 1, 7, 64, 300, 999, 1400)


def payload(tag, i):
    n = SIZES[i % len(SIZES)]
    return tag + struct.pack("!I", i) + bytes((i * 31 + j) & 0xFF for j in range(n))


def udp4(src, dst, data):
    """An IPv4/UDP packet exactly as tunneltest.UDP4 builds it (no checksums)."""
    p = bytearray(28 + len(data))
    p[0] = 0x45
    struct.pack_into("!H", p, 2, len(p))
    p[8] = 64
    p[9] = 17
    p[12:16] = src.packed
    p[16:20] = dst.packed
    struct.pack_into("!HHH", p, 20, 40000, 9, 8 + len(data))
    p[28:] = data
    return bytes(p)


def frame(typ, data, end=False):
    if not LIMITS[typ][0] <= len(data) <= LIMITS[typ][1]:
        raise ValueError(f"{NAMES[typ]} payload of {len(data)} bytes")
    return bytes([typ | (END if end else 0)]) + len(data).to_bytes(3, "big") + data


def attr(tag, value):
    return bytes([tag]) + struct.pack("!H", len(value)) + value


class Fail(Exception):
    """A protocol or interop mismatch: reported as FAIL, exit status 1."""


class PeerClosed(Fail):
    pass


def say(line):
    print(line, flush=True)


def log(msg):
    print(f"peer: {msg}", file=sys.stderr, flush=True)


class Counters:
    """What OpenSSL's message callback saw (ssl.SSLContext._msg_callback).

    _msg_callback is the ssl module's (private, but stdlib) hook onto
    SSL_CTX_set_msg_callback: it reports every handshake message and
    record header OpenSSL reads or writes, post-handshake ones included.
    """

    def __init__(self, padding):
        self.padding = padding
        self.ku_sent = self.ku_recv = self.ku_recv_req = 0
        self.tickets_sent = self.tickets_recv = 0
        self.records_sent = self.records_recv = 0
        self.records_key = 0  # records written under the current sending key
        self.max_sent = self.max_recv = 0  # largest record lengths (header field)
        self.unpadded = 0
        self.first_unpadded = None
        self.tx = self.rx = 0

    def callback(self, conn, direction, version, content_type, msg_type, data):
        ct = int(content_type)
        write = direction == "write"
        if ct == CT_HANDSHAKE and len(data) >= 4:
            # OpenSSL reports a written message after the header of the
            # record that carries it: that record counts under the old key.
            if write and data[0] in (HS_FINISHED, HS_KEY_UPDATE):
                self.records_key = 0
            if data[0] == HS_KEY_UPDATE:
                if write:
                    self.ku_sent += 1
                else:
                    self.ku_recv += 1
                    if len(data) >= 5 and data[4] == 1:
                        self.ku_recv_req += 1
            elif data[0] == HS_NEW_SESSION_TICKET:
                if write:
                    self.tickets_sent += 1
                else:
                    self.tickets_recv += 1
        elif ct == CT_HEADER and len(data) == 5 and data[0] == CT_APPLICATION_DATA:
            length = struct.unpack("!H", data[3:5])[0]
            if not write:
                self.records_recv += 1
                self.max_recv = max(self.max_recv, length)
                return
            self.records_sent += 1
            self.records_key += 1
            self.max_sent = max(self.max_sent, length)
            inner = length - TAG_LEN
            if self.padding and inner % self.padding != 0 and inner != MAX_INNER:
                self.unpadded += 1
                if self.first_unpadded is None:
                    self.first_unpadded = inner

    def fields(self):
        return (f"tx={self.tx} rx={self.rx} ku_sent={self.ku_sent} ku_recv={self.ku_recv} "
                f"ku_recv_req={self.ku_recv_req} tickets_sent={self.tickets_sent} "
                f"tickets_recv={self.tickets_recv} records_sent={self.records_sent} "
                f"records_recv={self.records_recv} records_key={self.records_key} max_sent={self.max_sent} "
                f"max_recv={self.max_recv} unpadded={self.unpadded}")


class Conn:
    """The tlsvpn frame stream on one TLS connection."""

    def __init__(self, tls, counters):
        self.tls = tls
        self.c = counters
        self.buf = bytearray()

    def send(self, data):
        self.tls.sendall(data)

    def _fill(self):
        try:
            data = self.tls.recv(1 << 16)
        except ssl.SSLEOFError as e:
            raise Fail(f"connection closed without close_notify: {e}") from e
        except socket.timeout as e:
            raise Fail("timed out waiting for data from the Go side") from e
        if not data:
            raise PeerClosed("the Go side closed the TLS stream (close_notify) unexpectedly")
        self.buf += data

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_frame(self):
        h = self.read_exact(4)
        typ, end, n = h[0] & 0x7F, bool(h[0] & END), int.from_bytes(h[1:4], "big")
        if typ not in LIMITS:
            raise Fail(f"frame of unknown type 0x{typ:02x}")
        lo, hi = LIMITS[typ]
        if not lo <= n <= hi:
            raise Fail(f"{NAMES[typ]} frame with payload length {n}, allowed {lo}..{hi}")
        p = self.read_exact(n)
        if typ in CONTROL and not end:
            # Section 2: each control frame is a write of its own and
            # carries E. Checked on every frame the Go side sends.
            raise Fail(f"{NAMES[typ]} frame without the E bit (header {h.hex()}): "
                       f"every control frame must carry E (PROTOCOL.md section 2)")
        return typ, end, p

    def session_frame(self, waiting_for):
        """The next DATA, PONG or CLOSE frame; PINGs are answered on the way."""
        while True:
            typ, _, p = self.read_frame()
            if typ == PING:
                self.send(frame(PONG, p, end=True))
                continue
            if typ == CLOSE:
                code, reason = parse_close(p)
                raise PeerClosed(f"Go side sent CLOSE code={code} reason={reason!r} "
                                 f"while this peer waited for {waiting_for}")
            if typ in (DATA, PONG):
                return typ, p
            raise Fail(f"unexpected {NAMES[typ]} frame during the session "
                       f"(waiting for {waiting_for})")


def parse_close(p):
    code = struct.unpack("!H", p[:2])[0]
    return code, p[2:].decode("utf-8", errors="replace")


def parse_attrs(p, known, what):
    if not p or p[0] != CONTROL_VERSION:
        raise Fail(f"{what}: version byte {p[:1].hex()}, want 01")
    out = {}
    i = 1
    while i < len(p):
        if i + 3 > len(p):
            raise Fail(f"{what}: truncated attribute header")
        tag, n = p[i], struct.unpack("!H", p[i + 1:i + 3])[0]
        v = p[i + 3:i + 3 + n]
        if len(v) != n:
            raise Fail(f"{what}: attribute 0x{tag:02x} runs past the end")
        if tag not in known and tag & 0x80:
            raise Fail(f"{what}: unknown critical attribute 0x{tag:02x}")
        out.setdefault(tag, []).append(v)
        i += 3 + n
    return out


def parse_config(p):
    a = parse_attrs(p, {0x81, 0x02, 0x83, 0x84, 0x05, 0x06, 0x87, 0x08, 0x09, 0x0A, 0x0B}, "CONFIG")
    for tag, name in ((0x81, "addr4"), (0x02, "server4"), (0x83, "mtu")):
        if tag not in a:
            raise Fail(f"CONFIG without the required {name} attribute")
    addr4 = a[0x81][0]
    if len(addr4) != 5 or addr4[4] > 32:
        raise Fail(f"CONFIG addr4 {addr4.hex()} malformed")
    if len(a[0x02][0]) != 4 or len(a[0x83][0]) != 2:
        raise Fail("CONFIG server4 or mtu malformed")
    mtu = struct.unpack("!H", a[0x83][0])[0]
    if mtu < 576:
        raise Fail(f"CONFIG mtu {mtu} below 576")

    def u32(tag):
        if tag not in a:
            return 0
        if len(a[tag][0]) != 4:
            raise Fail(f"CONFIG attribute 0x{tag:02x} is not a uint32")
        return struct.unpack("!I", a[tag][0])[0]

    return {
        "addr4": ipaddress.IPv4Address(addr4[:4]), "bits": addr4[4],
        "server4": ipaddress.IPv4Address(a[0x02][0]), "mtu": mtu,
        "keepalive_ms": u32(0x05), "caps": u32(0x06),
    }


def parse_hello(p):
    a = parse_attrs(p, {0x01, 0x02, 0x03}, "HELLO")
    caps = 0
    if 0x01 in a:
        if len(a[0x01][0]) != 4:
            raise Fail("HELLO caps is not a uint32")
        caps = struct.unpack("!I", a[0x01][0])[0]
    sw = a.get(0x02, [b""])[0].decode("utf-8", errors="replace")
    return caps, sw


def make_context(args):
    if args.role == "client":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.verify_mode = ssl.CERT_REQUIRED  # the client must present a certificate of the CA
        ctx.num_tickets = args.tickets
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols([ALPN])
    return ctx


def check_tls(tls, args, counters):
    cipher, version, _ = tls.cipher()
    if version != "TLSv1.3" or tls.version() != "TLSv1.3":
        raise Fail(f"negotiated {tls.version()}, want TLSv1.3")
    if args.expect_cipher and cipher != args.expect_cipher:
        raise Fail(f"negotiated cipher suite {cipher}, but OPENSSL_CONF forces {args.expect_cipher}")
    alpn = tls.selected_alpn_protocol()
    if alpn != ALPN:
        raise Fail(f"ALPN {alpn!r}, want {ALPN!r}")
    cert = tls.getpeercert()
    if not cert:
        raise Fail("no verified peer certificate")
    cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
    say(f"tls cipher={cipher} version={version} alpn={alpn} peer_cn={cn} "
        f"tickets_sent={counters.tickets_sent} tickets_recv={counters.tickets_recv}")


class Peer:
    def __init__(self, args):
        self.args = args
        self.c = Counters(args.expect_padding)
        self.conn = None
        self.handle = None
        self.me = self.them = None  # tunnel addresses: this peer's, the Go side's
        self.step = "the TLS handshake"  # what the peer is doing, for FAIL messages

    def start(self):
        args = self.args
        ctx = make_context(args)
        ctx._msg_callback = self.c.callback
        if args.role == "client":
            raw = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = ctx.wrap_socket(raw, server_hostname=args.server_name, suppress_ragged_eofs=False)
        else:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            ls.settimeout(args.timeout)
            say(f"listen port={ls.getsockname()[1]}")
            try:
                raw, _ = ls.accept()
            except socket.timeout as e:
                raise Fail("no connection from the Go client") from e
            finally:
                ls.close()  # one connection only: a reconnect or rotation is refused
            raw.settimeout(args.timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
        tls.settimeout(args.timeout)
        check_tls(tls, args, self.c)
        self.step = "the protocol handshake (HELLO/CONFIG)"
        self.conn = Conn(tls, self.c)
        self.handle = ossl.Handle(tls, server=args.role == "server")
        if args.role == "client":
            self.client_handshake()
        else:
            self.server_handshake()
        say("ready")

    def hello(self):
        return frame(HELLO, bytes([CONTROL_VERSION]) + attr(0x01, struct.pack("!I", self.args.caps))
                     + attr(0x02, b"interop-peer/openssl"), end=True)

    def client_handshake(self):
        args, conn = self.args, self.conn
        hello = self.hello()
        early = None
        if args.hello == "with-ping":
            # HELLO and a PING in one write: one TLS record.
            ping = struct.pack("!Q", 0x1122334455667788)
            conn.send(hello + frame(PING, ping, end=True))
        elif args.hello == "with-partial-data":
            # HELLO and the first 10 bytes of a DATA frame in one record;
            # the rest of the frame in a later record. The address is the
            # one the Go side's pool will assign (checked against CONFIG).
            src = ipaddress.IPv4Address(args.early_src)
            early = frame(DATA, udp4(src, ipaddress.IPv4Address(args.early_dst), payload(b"P", 0)),
                          end=True)
            conn.send(hello + early[:10])
        else:
            conn.send(hello)
        typ, _, p = conn.read_frame()
        if typ == CLOSE:
            code, reason = parse_close(p)
            raise PeerClosed(f"server refused: CLOSE code={code} reason={reason!r}")
        if typ != CONFIG:
            raise Fail(f"got {NAMES[typ]} frame, want CONFIG")
        cfg = parse_config(p)
        self.me, self.them = cfg["addr4"], cfg["server4"]
        say(f"config addr4={cfg['addr4']}/{cfg['bits']} server4={cfg['server4']} mtu={cfg['mtu']} "
            f"keepalive_ms={cfg['keepalive_ms']} caps=0x{cfg['caps']:x}")
        if args.hello == "with-ping":
            typ, p = conn.session_frame("the PONG to the PING sent with HELLO")
            if typ != PONG or p != ping:
                raise Fail(f"got {NAMES[typ]} {p.hex()} after CONFIG, want the PONG {ping.hex()}")
        elif early is not None:
            if str(self.me) != args.early_src or str(self.them) != args.early_dst:
                raise Fail(f"CONFIG has addr4 {self.me} and server4 {self.them}, but the early DATA "
                           f"went from {args.early_src} to {args.early_dst}")
            conn.send(early[10:])
            self.c.tx += 1

    def server_handshake(self):
        args, conn = self.args, self.conn
        typ, _, p = conn.read_frame()
        if typ != HELLO:
            raise Fail(f"got {NAMES[typ]} frame, want HELLO")
        caps, sw = parse_hello(p)
        say(f"hello caps=0x{caps:x} software={sw.replace(' ', '_')}")
        addr = ipaddress.IPv4Interface(args.addr4)
        self.me, self.them = ipaddress.IPv4Address(args.server4), addr.ip
        cfg = (bytes([CONTROL_VERSION])
               + attr(0x81, addr.ip.packed + bytes([addr.network.prefixlen]))  # addr4 (critical)
               + attr(0x02, self.me.packed)  # server4
               + attr(0x83, struct.pack("!H", args.mtu))  # mtu (critical)
               + attr(0x05, struct.pack("!I", args.keepalive_ms))  # keepalive
               + attr(0x06, struct.pack("!I", args.caps)))  # caps
        conn.send(frame(CONFIG, cfg, end=True))

    # ---------------------------------------------------------------- commands

    def data_frame(self, i, end):
        return frame(DATA, udp4(self.me, self.them, payload(b"P", i)), end=end)

    def cmd_send(self, n, per=None):
        n = int(n)
        per = int(per) if per else max(n, 1)
        i = 0
        while i < n:
            k = min(per, n - i)
            frames = [self.data_frame(self.c.tx + j, end=(j == k - 1)) for j in range(k)]
            self.conn.send(b"".join(frames))
            self.c.tx += k
            i += k

    def cmd_recv(self, n):
        for _ in range(int(n)):
            typ, p = self.conn.session_frame(f"DATA packet G{self.c.rx}")
            if typ != DATA:
                raise Fail(f"got {NAMES[typ]} while waiting for DATA packet G{self.c.rx}")
            want = udp4(self.them, self.me, payload(b"G", self.c.rx))
            if p != want:
                raise Fail(f"DATA packet G{self.c.rx} differs: got {len(p)} bytes "
                           f"{p[:48].hex()}..., want {len(want)} bytes {want[:48].hex()}...")
            self.c.rx += 1

    def wait_pong(self, ping):
        typ, p = self.conn.session_frame("PONG")
        if typ != PONG:
            raise Fail(f"got {NAMES[typ]} while waiting for PONG")
        if p != ping:
            raise Fail(f"PONG {p.hex()} does not echo PING {ping.hex()}")

    def cmd_ping(self):
        ping = struct.pack("!Q", time.monotonic_ns())
        self.conn.send(frame(PING, ping, end=True))
        self.wait_pong(ping)

    def cmd_ebit(self):
        # A DATA frame WITHOUT the E bit, then a PING WITH it, in one write:
        # the receiver must hand the DATA's packet to its TUN on the PING's E.
        ping = struct.pack("!Q", time.monotonic_ns())
        self.conn.send(self.data_frame(self.c.tx, end=False) + frame(PING, ping, end=True))
        self.c.tx += 1
        self.wait_pong(ping)

    def cmd_keyupdate(self, request):
        self.handle.key_update(int(request))

    def cmd_ticket(self):
        if self.args.role != "server":
            raise Fail("only a server sends NewSessionTicket")
        self.handle.new_session_ticket()

    def cmd_stats(self):
        pass

    def cmd_close(self):
        self.conn.send(frame(CLOSE, struct.pack("!H", 0) + b"interop peer done", end=True))
        while True:
            typ, _, p = self.conn.read_frame()
            if typ == CLOSE:
                break
            if typ not in (PING, PONG):
                raise Fail(f"got {NAMES[typ]} after sending CLOSE, want CLOSE")
        code, reason = parse_close(p)
        if code != 0:
            raise Fail(f"CLOSE answer has code {code} ({reason!r}), want 0 (normal)")
        # Then the Go side closes the TLS stream: close_notify, then EOF.
        if self.conn.buf:
            raise Fail(f"{len(self.conn.buf)} bytes after the CLOSE frame")
        try:
            data = self.conn.tls.recv(1 << 16)
        except ssl.SSLEOFError as e:
            raise Fail(f"Go side closed the connection without close_notify: {e}") from e
        except socket.timeout as e:
            raise Fail("Go side did not close the connection after its CLOSE") from e
        if data:
            raise Fail(f"{len(data)} bytes of application data after the CLOSE frame")
        self.conn.tls.close()
        return f"code={code} reason={reason.replace(' ', '_')}"

    def check_padding(self):
        if self.args.expect_padding and self.c.unpadded:
            raise Fail(f"{self.c.unpadded} of {self.c.records_sent} records written were not padded to "
                       f"{self.args.expect_padding} (first: {self.c.first_unpadded} bytes of inner "
                       "plaintext): OPENSSL_CONF RecordPadding not in effect")

    def serve_commands(self):
        cmds = {"send": self.cmd_send, "recv": self.cmd_recv, "ping": self.cmd_ping,
                "ebit": self.cmd_ebit, "keyupdate": self.cmd_keyupdate,
                "ticket": self.cmd_ticket, "stats": self.cmd_stats, "close": self.cmd_close}
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            fn = cmds.get(words[0])
            self.step = f"command {line.strip()!r}"
            if fn is None:
                raise Fail(f"unknown command {line.strip()!r}")
            try:
                extra = fn(*words[1:])
            except TypeError as e:
                raise Fail(f"bad command {line.strip()!r}: {e}") from e
            self.check_padding()
            say(f"ok {words[0]} {self.c.fields()}" + (f" {extra}" if extra else ""))
            if words[0] == "close":
                return
        log("stdin closed before the close command; leaving")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("client", "server"), required=True)
    ap.add_argument("--port", type=int, default=0, help="client: the Go server's port on 127.0.0.1")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--server-name", default="server", help="client: name in the server certificate")
    ap.add_argument("--caps", type=lambda s: int(s, 0), default=0, help="HELLO (client) or CONFIG (server) caps")
    ap.add_argument("--expect-cipher", default="")
    ap.add_argument("--expect-padding", type=int, default=0)
    ap.add_argument("--tickets", type=int, default=2, help="server: NewSessionTickets after the handshake")
    ap.add_argument("--hello", choices=("normal", "with-ping", "with-partial-data"), default="normal")
    ap.add_argument("--early-src", default="100.64.0.2", help="with-partial-data: the address CONFIG will assign")
    ap.add_argument("--early-dst", default="100.64.0.1", help="with-partial-data: the server's tunnel address")
    ap.add_argument("--addr4", default="100.64.0.2/24", help="server: the client's address in CONFIG")
    ap.add_argument("--server4", default="100.64.0.1")
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--keepalive-ms", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per socket operation")
    ap.add_argument("--deadline", type=int, default=30, help="seconds for the whole run")
    args = ap.parse_args()
    if args.role == "client" and not 0 < args.port < 65536:
        ap.error("--role client needs --port")

    def on_alarm(signum, frame_):
        say(f"FAIL deadline of {args.deadline}s exceeded")
        log(f"deadline of {args.deadline}s exceeded")
        os._exit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline)

    peer = Peer(args)
    try:
        peer.start()
        peer.serve_commands()
    except (Fail, ossl.OpenSSLError, ssl.SSLError, OSError) as e:
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, Fail) else str(e)
        msg += f" (during {peer.step})"
        say(f"FAIL {msg}")
        log(f"{msg} (counters: {peer.c.fields()})")
        sys.exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
