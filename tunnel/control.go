package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// Control messages are a version byte followed by attributes, each
// tag(1) | length(2, big-endian) | value. Unknown tags are skipped so later
// versions can add attributes; a tag with the high bit set is critical and
// an unknown critical tag is an error. See docs/PROTOCOL.md.

// ControlVersion is the version byte of Hello and Config.
const ControlVersion = 1

const tagCritical = 0x80

// Capability bits exchanged in Hello and Config.
const (
	// CapGSO: the sender accepts DATA_GSO frames.
	CapGSO uint32 = 1 << 0
	// CapKeyUpdate: the sender accepts TLS KeyUpdate messages after the
	// protocol handshake (RFC 8446 section 4.6.3) and its per-key record
	// count restarts with each new key, so the peer may update the keys
	// in-band instead of opening a new session (docs/PROTOCOL.md 1.1).
	//
	// tlsvpn announces it only from a side that will try its own record
	// layer (tryOwnRecords: not with StdlibRecords, not in FIPS mode). A
	// side that stays on crypto/tls accepts KeyUpdate too, but its
	// BatchConn cannot see key updates and counts every record of the
	// connection, so its session would end with CloseRekey at
	// MaxRecordsPerKey; without the capability its peer, or itself as the
	// client, rotates by reconnecting at RotateRecords instead.
	//
	// The hand-over is decided after HELLO and CONFIG (StartData), so the
	// announcement stands when it is refused. A client whose hand-over is
	// refused knows (its session does not rekey in-band) and rotates by
	// reconnecting. A server whose hand-over is refused cannot take the
	// capability back: its client keeps updating the keys in-band and does
	// not rotate, and the server's session, counting all records, ends
	// with CloseRekey when the connection has carried MaxRecordsPerKey
	// records in one direction; the client then reconnects. Fail closed: no
	// key ever protects more records than the limit allows.
	CapKeyUpdate uint32 = 1 << 1
)

// Attribute tags of Hello.
const (
	helloTagCaps      = 0x01 // uint32
	helloTagSoftware  = 0x02 // UTF-8, informative
	helloTagAdvertise = 0x03 // 1-byte family (4|6) + address + prefix length; repeated
)

// Attribute tags of Config.
const (
	cfgTagAddr4      = 0x81 // 4-byte address + prefix length (critical)
	cfgTagServer4    = 0x02 // 4-byte address
	cfgTagMTU        = 0x83 // uint16 (critical)
	cfgTagRoute      = 0x84 // 1-byte family (4|6) + address + prefix length (critical)
	cfgTagKeepalive  = 0x05 // uint32 milliseconds
	cfgTagCaps       = 0x06 // uint32
	cfgTagAddr6      = 0x87 // 16-byte address + prefix length (critical)
	cfgTagServer6    = 0x08 // 16-byte address
	cfgTagSessionTTL = 0x09 // uint32 seconds, informative
	cfgTagDNS        = 0x0a // 4- or 16-byte resolver address; repeated
	cfgTagAccepted   = 0x0b // like cfgTagRoute: an advertised prefix the server accepted; repeated
)

// Limits on control content.
const (
	MaxRoutes    = 256
	MaxDNS       = 8
	maxSoftware  = 64
	MaxReasonLen = 1024
)

// ErrBadControl wraps every control-message decoding error.
var ErrBadControl = errors.New("malformed control message")

// Hello is the client's first frame after the TLS handshake.
type Hello struct {
	Caps     uint32
	Software string // e.g. "tunnelc/0.1"; informative only
	// Advertise lists the networks behind the client (a site gateway's
	// LANs) that it asks the server to route to it. The server accepts
	// only those its policy allows for the client's identity.
	Advertise []netip.Prefix
}

// Config is the server's answer to Hello: everything the client needs to
// configure its interface.
type Config struct {
	Addr       netip.Prefix   // client's tunnel address and prefix, e.g. 100.64.0.2/24
	ServerAddr netip.Addr     // server's tunnel address, e.g. 100.64.0.1
	Addr6      netip.Prefix   // optional IPv6 tunnel address
	Server6    netip.Addr     // optional server IPv6 tunnel address
	MTU        int            // tunnel MTU
	Routes     []netip.Prefix // routes to install via the tunnel
	Keepalive  time.Duration  // ping interval; 0 disables pings
	Caps       uint32         // what the server accepts (CapGSO)
	DNS        []netip.Addr   // resolvers the client should use
	Accepted   []netip.Prefix // advertised prefixes the server routes to the client
}

func appendAttr(b []byte, tag byte, v []byte) []byte {
	b = append(b, tag, byte(len(v)>>8), byte(len(v)))
	return append(b, v...)
}

func appendU32(b []byte, tag byte, v uint32) []byte {
	var x [4]byte
	binary.BigEndian.PutUint32(x[:], v)
	return appendAttr(b, tag, x[:])
}

func appendPrefix(b []byte, tag byte, p netip.Prefix, family bool) []byte {
	var x [18]byte
	n := 0
	if family {
		x[0] = 4
		if p.Addr().Is6() {
			x[0] = 6
		}
		n = 1
	}
	n += copy(x[n:], p.Addr().AsSlice())
	x[n] = byte(p.Bits())
	return appendAttr(b, tag, x[:n+1])
}

// walkAttrs calls fn for each attribute in b (after the version byte).
func walkAttrs(b []byte, fn func(tag byte, v []byte) (known bool, err error)) error {
	if len(b) < 1 {
		return fmt.Errorf("%w: empty", ErrBadControl)
	}
	if b[0] != ControlVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadControl, b[0], ControlVersion)
	}
	b = b[1:]
	for len(b) > 0 {
		if len(b) < 3 {
			return fmt.Errorf("%w: truncated attribute header", ErrBadControl)
		}
		tag, n := b[0], int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < 3+n {
			return fmt.Errorf("%w: attribute 0x%02x length %d exceeds message", ErrBadControl, tag, n)
		}
		known, err := fn(tag, b[3:3+n])
		if err != nil {
			return fmt.Errorf("%w: attribute 0x%02x: %w", ErrBadControl, tag, err)
		}
		if !known && tag&tagCritical != 0 {
			return fmt.Errorf("%w: unknown critical attribute 0x%02x", ErrBadControl, tag)
		}
		b = b[3+n:]
	}
	return nil
}

func u32(v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("length %d, want 4", len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

func addrOf(v []byte, want int) (netip.Addr, error) {
	if len(v) != want {
		return netip.Addr{}, fmt.Errorf("address length %d, want %d", len(v), want)
	}
	a, _ := netip.AddrFromSlice(v)
	return a, nil
}

func prefixOf(v []byte, addrLen int) (netip.Prefix, error) {
	if len(v) != addrLen+1 {
		return netip.Prefix{}, fmt.Errorf("prefix length %d, want %d", len(v), addrLen+1)
	}
	a, _ := netip.AddrFromSlice(v[:addrLen])
	p, err := a.Prefix(int(v[addrLen]))
	if err != nil || p.Bits() != int(v[addrLen]) {
		return netip.Prefix{}, fmt.Errorf("bad prefix length %d for %v", v[addrLen], a)
	}
	return netip.PrefixFrom(a, int(v[addrLen])), nil
}

// MarshalHello encodes h as a Hello payload.
func MarshalHello(h Hello) []byte {
	b := []byte{ControlVersion}
	b = appendU32(b, helloTagCaps, h.Caps)
	sw := h.Software
	if len(sw) > maxSoftware {
		sw = sw[:maxSoftware]
	}
	if sw != "" {
		b = appendAttr(b, helloTagSoftware, []byte(sw))
	}
	for i, p := range h.Advertise {
		if i == MaxRoutes {
			break
		}
		if p.IsValid() {
			b = appendPrefix(b, helloTagAdvertise, p.Masked(), true)
		}
	}
	return b
}

// appendFamilyPrefix decodes a repeated prefix attribute onto list,
// refusing more than MaxRoutes of them.
func appendFamilyPrefix(list *[]netip.Prefix, v []byte, what string) error {
	if len(*list) >= MaxRoutes {
		return fmt.Errorf("more than %d %s", MaxRoutes, what)
	}
	p, err := familyPrefix(v)
	if err != nil {
		return err
	}
	*list = append(*list, p)
	return nil
}

// familyPrefix decodes a 1-byte family (4 or 6) followed by an address and
// a prefix length.
func familyPrefix(v []byte) (netip.Prefix, error) {
	if len(v) < 1 {
		return netip.Prefix{}, errors.New("empty prefix")
	}
	var p netip.Prefix
	var err error
	switch v[0] {
	case 4:
		p, err = prefixOf(v[1:], 4)
	case 6:
		p, err = prefixOf(v[1:], 16)
		if err == nil && p.Addr().Is4In6() {
			err = errors.New("IPv4-mapped prefix")
		}
	default:
		err = fmt.Errorf("prefix family %d", v[0])
	}
	return p.Masked(), err
}

// UnmarshalHello decodes a Hello payload.
func UnmarshalHello(b []byte) (Hello, error) {
	var h Hello
	err := walkAttrs(b, func(tag byte, v []byte) (bool, error) {
		var err error
		switch tag {
		case helloTagCaps:
			h.Caps, err = u32(v)
		case helloTagSoftware:
			if len(v) > maxSoftware || !utf8.Valid(v) {
				return true, errors.New("software name too long or not UTF-8")
			}
			h.Software = string(v)
		case helloTagAdvertise:
			return true, appendFamilyPrefix(&h.Advertise, v, "advertised prefixes")
		default:
			return false, nil
		}
		return true, err
	})
	return h, err
}

// MarshalConfig encodes c as a Config payload. It rejects configurations the
// client could not apply, so a server bug shows up on the server.
func MarshalConfig(c Config) ([]byte, error) {
	if !c.Addr.IsValid() || !c.Addr.Addr().Is4() {
		return nil, fmt.Errorf("config: client IPv4 address %v invalid", c.Addr)
	}
	if !c.ServerAddr.Is4() {
		return nil, fmt.Errorf("config: server address %v is not IPv4", c.ServerAddr)
	}
	if c.MTU < 576 || c.MTU > MaxDataLen {
		return nil, fmt.Errorf("config: mtu %d out of range [576, %d]", c.MTU, MaxDataLen)
	}
	if len(c.Routes) > MaxRoutes {
		return nil, fmt.Errorf("config: %d routes, at most %d", len(c.Routes), MaxRoutes)
	}
	b := []byte{ControlVersion}
	b = appendPrefix(b, cfgTagAddr4, c.Addr, false)
	b = appendAttr(b, cfgTagServer4, c.ServerAddr.AsSlice())
	if c.Addr6.IsValid() {
		if !c.Addr6.Addr().Is6() || c.Addr6.Addr().Is4In6() {
			return nil, fmt.Errorf("config: client IPv6 address %v invalid", c.Addr6)
		}
		b = appendPrefix(b, cfgTagAddr6, c.Addr6, false)
		if c.Server6.IsValid() {
			b = appendAttr(b, cfgTagServer6, c.Server6.AsSlice())
		}
	}
	b = appendAttr(b, cfgTagMTU, []byte{byte(c.MTU >> 8), byte(c.MTU)})
	for _, r := range c.Routes {
		if !r.IsValid() {
			return nil, fmt.Errorf("config: invalid route %v", r)
		}
		b = appendPrefix(b, cfgTagRoute, r.Masked(), true)
	}
	if len(c.DNS) > MaxDNS {
		return nil, fmt.Errorf("config: %d DNS servers, at most %d", len(c.DNS), MaxDNS)
	}
	for _, d := range c.DNS {
		if !d.IsValid() || d.Is4In6() || d.Zone() != "" {
			return nil, fmt.Errorf("config: invalid DNS server %v", d)
		}
		b = appendAttr(b, cfgTagDNS, d.AsSlice())
	}
	if len(c.Accepted) > MaxRoutes {
		return nil, fmt.Errorf("config: %d accepted prefixes, at most %d", len(c.Accepted), MaxRoutes)
	}
	for _, r := range c.Accepted {
		if !r.IsValid() {
			return nil, fmt.Errorf("config: invalid accepted prefix %v", r)
		}
		b = appendPrefix(b, cfgTagAccepted, r.Masked(), true)
	}
	b = appendU32(b, cfgTagKeepalive, uint32(c.Keepalive/time.Millisecond))
	b = appendU32(b, cfgTagCaps, c.Caps)
	if len(b) > MaxControlLen {
		return nil, fmt.Errorf("config: encoded size %d exceeds %d", len(b), MaxControlLen)
	}
	return b, nil
}

// UnmarshalConfig decodes and validates a Config payload.
func UnmarshalConfig(b []byte) (Config, error) {
	var c Config
	err := walkAttrs(b, func(tag byte, v []byte) (bool, error) {
		var err error
		switch tag {
		case cfgTagAddr4:
			c.Addr, err = prefixOf(v, 4)
		case cfgTagServer4:
			c.ServerAddr, err = addrOf(v, 4)
		case cfgTagAddr6:
			c.Addr6, err = prefixOf(v, 16)
		case cfgTagServer6:
			c.Server6, err = addrOf(v, 16)
		case cfgTagMTU:
			if len(v) != 2 {
				return true, fmt.Errorf("mtu length %d, want 2", len(v))
			}
			c.MTU = int(binary.BigEndian.Uint16(v))
		case cfgTagRoute:
			err = appendFamilyPrefix(&c.Routes, v, "routes")
		case cfgTagAccepted:
			err = appendFamilyPrefix(&c.Accepted, v, "accepted prefixes")
		case cfgTagKeepalive:
			var ms uint32
			ms, err = u32(v)
			c.Keepalive = time.Duration(ms) * time.Millisecond
		case cfgTagCaps:
			c.Caps, err = u32(v)
		case cfgTagSessionTTL:
			_, err = u32(v)
		case cfgTagDNS:
			if len(c.DNS) >= MaxDNS {
				return true, fmt.Errorf("more than %d DNS servers", MaxDNS)
			}
			var a netip.Addr
			switch len(v) {
			case 4:
				a, err = addrOf(v, 4)
			default:
				a, err = addrOf(v, 16)
				if err == nil && a.Is4In6() {
					err = errors.New("IPv4-mapped DNS server")
				}
			}
			c.DNS = append(c.DNS, a)
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		return Config{}, err
	}
	if !c.Addr6.IsValid() {
		c.Server6 = netip.Addr{} // meaningless without a client IPv6 address
	}
	switch {
	case !c.Addr.IsValid() || !c.Addr.Addr().Is4():
		return Config{}, fmt.Errorf("%w: missing client IPv4 address", ErrBadControl)
	case !c.ServerAddr.Is4():
		return Config{}, fmt.Errorf("%w: missing server IPv4 address", ErrBadControl)
	case c.MTU < 576:
		return Config{}, fmt.Errorf("%w: mtu %d below 576", ErrBadControl, c.MTU)
	case c.Addr6.IsValid() && (!c.Addr6.Addr().Is6() || c.Addr6.Addr().Is4In6()):
		return Config{}, fmt.Errorf("%w: bad IPv6 address %v", ErrBadControl, c.Addr6)
	}
	return c, nil
}

// Close codes carried in a Close frame.
const (
	CloseNormal      uint16 = 0  // orderly shutdown
	CloseShutdown    uint16 = 1  // the server is shutting down
	CloseReplaced    uint16 = 2  // a newer session of the same identity took over
	CloseProtocol    uint16 = 3  // the peer broke the protocol
	CloseTimeout     uint16 = 4  // keepalive deadline missed
	ClosePolicy      uint16 = 5  // refused by policy (pool exhausted, limits)
	CloseInternal    uint16 = 6  // a bug on the sender's side
	CloseUnsupported uint16 = 7  // version or capability mismatch
	CloseRekey       uint16 = 8  // the key's record budget is spent; reconnect
	CloseRevoked     uint16 = 9  // the peer's certificate was revoked or expired
	CloseReconfigure uint16 = 10 // the client's configuration changed; reconnect at once
	CloseKicked      uint16 = 11 // an operator closed the session (tunneld kick); reconnect after the usual wait
	CloseDraining    uint16 = 12 // the gateway is being taken out of service (tunneld drain); reconnect at once, to another one
)

// CloseCodeName returns a short name for a close code.
func CloseCodeName(c uint16) string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseShutdown:
		return "shutdown"
	case CloseReplaced:
		return "replaced"
	case CloseProtocol:
		return "protocol_error"
	case CloseTimeout:
		return "timeout"
	case ClosePolicy:
		return "policy"
	case CloseInternal:
		return "internal_error"
	case CloseUnsupported:
		return "unsupported"
	case CloseRekey:
		return "rekey"
	case CloseRevoked:
		return "revoked"
	case CloseReconfigure:
		return "reconfigure"
	case CloseKicked:
		return "kicked"
	case CloseDraining:
		return "draining"
	}
	return fmt.Sprintf("code_%d", c)
}

// MarshalClose encodes a Close payload; the reason is cut to MaxReasonLen
// bytes at a rune boundary.
func MarshalClose(code uint16, reason string) []byte {
	reason = clipReason(reason)
	b := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(b, code)
	return append(b, reason...)
}

// UnmarshalClose decodes a Close payload. Invalid UTF-8 in the reason is
// replaced, not rejected: the session ends either way.
func UnmarshalClose(b []byte) (code uint16, reason string, err error) {
	if len(b) < 2 {
		return 0, "", fmt.Errorf("%w: close frame of %d bytes", ErrBadControl, len(b))
	}
	if len(b)-2 > MaxReasonLen {
		return 0, "", fmt.Errorf("%w: close reason of %d bytes", ErrBadControl, len(b)-2)
	}
	return binary.BigEndian.Uint16(b), clipReason(strings.ToValidUTF8(string(b[2:]), "\uFFFD")), nil
}

// clipReason makes reason valid UTF-8 of at most MaxReasonLen bytes.
func clipReason(reason string) string {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	for len(reason) > MaxReasonLen {
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	return reason
}
