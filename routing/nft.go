package routing

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
)

// FirewallTable returns the name of the nftables table that the instance
// named instance (its tunnel interface name, --tun) owns, in the inet family
// (IPv4 and IPv6): "tlsvpn-" + instance, e.g. `nft list table inet
// tlsvpn-tunneld0`. Each instance has its own table, so two daemons in one
// network namespace never touch each other's rules. A Firewall replaces its
// whole content on every Set and deletes it on Close; CleanupFirewall (or
// `nft delete table inet tlsvpn-tunneld0`) removes it after a crash. Tables,
// chains and rules of anyone else are never touched.
//
// nft's command line accepts the name unquoted when the instance name has
// only letters, digits and '-', '_', '.'; otherwise quote it:
// `nft list table inet '"tlsvpn-a+b"'`.
func FirewallTable(instance string) string { return "tlsvpn-" + instance }

// LegacyFirewallTable is the one table that every instance shared before
// tables were named per instance (`inet tlsvpn`). No current process creates
// it; CleanupFirewall removes one left behind by an older version when it
// belongs to the instance being cleaned or to no running one.
const LegacyFirewallTable = "tlsvpn"

// FirewallConfig is the desired content of an instance's table
// (FirewallTable).
//
// The zero value means "no rules": Set with it leaves an empty table.
type FirewallConfig struct {
	// TunnelIf is the name of the tunnel interface (the TUN device). It
	// need not exist yet: rules match interface names, not indexes, so
	// they keep working when the device is re-created. Required by
	// ClampMSS, KillSwitch and IsolateClients.
	TunnelIf string

	// Masquerade lists source prefixes whose traffic is masqueraded
	// (source NAT to the address of the outgoing interface) when it leaves
	// through any interface other than TunnelIf: the server side of
	// --nat, or full-tunnel egress. Prefixes are normalized with Masked.
	// With TunnelIf empty, traffic leaving through any interface is
	// masqueraded.
	Masquerade []netip.Prefix

	// ClampMSS clamps the TCP MSS option of forwarded SYN and SYN-ACK
	// segments entering or leaving through TunnelIf to the MTU of the
	// route they take (`tcp option maxseg size set rt mtu`), so that TCP
	// through the tunnel works where ICMP "packet too big" is filtered
	// (a PMTU black hole, RFC 2923 section 2.1).
	ClampMSS bool

	// KillSwitch drops every packet the host sends or forwards, IPv4 and
	// IPv6, except:
	//   - packets through the loopback interface or TunnelIf (forwarded
	//     packets may also come in from TunnelIf);
	//   - TCP packets to one of ServerEndpoints, through any interface, so
	//     the tunnel can be (re-)established;
	//   - DHCPv4 client requests (udp 68 -> 67), and DHCPv6 client requests
	//     (udp 546 -> 547) from a link-local address;
	//   - the ICMPv6 a host needs on its link: router and neighbor
	//     solicitation, neighbor advertisement, MLDv2 reports (RFC 4861,
	//     RFC 3810).
	// Locally generated packets that are dropped make the sending call
	// fail at once with EPERM. Incoming packets are not filtered.
	KillSwitch bool
	// ServerEndpoints are the tunnel server addresses the kill switch
	// lets through. Plain IPv4, not IPv4-mapped IPv6; no zones.
	ServerEndpoints []netip.AddrPort

	// PortalIf, with KillSwitch, opens the hole a captive portal login
	// needs: the host's own packets (not forwarded ones) leaving through
	// the interface PortalIf to UDP or TCP port 53 (DNS) or TCP port 80
	// or 443, IPv4 and IPv6, to any address. "" (the default) opens
	// nothing. It must not be TunnelIf. The hole is part of the table, so
	// a Set with and then without it opens and closes it atomically.
	PortalIf string
	// ProbeMark, with KillSwitch and when not 0, lets the host's packets
	// whose socket carries this mark (SO_MARK, which needs CAP_NET_ADMIN
	// to set) to the same ports as PortalIf out through any interface but
	// TunnelIf, whether or not a hole is open: tunnelc's own captive
	// portal probe, which must get out to find that a portal is there.
	ProbeMark uint32

	// IsolateClients stops tunnel clients from opening connections to
	// each other through the server. A forwarded packet that comes in
	// through TunnelIf and goes out through TunnelIf again (client to
	// client) passes only if conntrack places it in an established or
	// related flow (a reply, or an ICMP error about a flow), or if its
	// source address is in ReachClients; any other such packet is dropped
	// and counted (Firewall.IsolationDrops). Packets between TunnelIf and
	// any other interface, and packets to or from the host itself, are
	// not affected.
	//
	// A reply passes because the flow it belongs to was allowed to start:
	// a client outside ReachClients can answer, but not initiate.
	// Connections that were established before isolation was turned on
	// or ReachClients shrank keep working until conntrack forgets them.
	IsolateClients bool
	// ReachClients lists the source prefixes that may open new flows to
	// other clients while IsolateClients is on: single clients (/32,
	// /128) or whole networks behind one (a site's LAN). IPv4 and IPv6
	// may be mixed; plain IPv4, not IPv4-mapped IPv6. Normalized masks
	// them and drops those inside others. Unused without IsolateClients.
	ReachClients []netip.Prefix
}

// Validate reports whether c is well-formed, wrapping ErrInvalidConfig.
func (c FirewallConfig) Validate() error {
	// IFNAMSIZ is 16 including the terminating NUL.
	if len(c.TunnelIf) > 15 {
		return fmt.Errorf("%w: tunnel interface name %q longer than 15 bytes", ErrInvalidConfig, c.TunnelIf)
	}
	if c.TunnelIf == "" && (c.ClampMSS || c.KillSwitch || c.IsolateClients) {
		return fmt.Errorf("%w: MSS clamping, the kill switch and client isolation need a tunnel interface", ErrInvalidConfig)
	}
	switch {
	case len(c.PortalIf) > 15:
		return fmt.Errorf("%w: portal interface name %q longer than 15 bytes", ErrInvalidConfig, c.PortalIf)
	case (c.PortalIf != "" || c.ProbeMark != 0) && !c.KillSwitch:
		return fmt.Errorf("%w: a captive portal hole or probe mark is an exception to the kill switch, which is off", ErrInvalidConfig)
	case c.PortalIf != "" && c.PortalIf == c.TunnelIf:
		return fmt.Errorf("%w: the captive portal hole is on the tunnel interface %s", ErrInvalidConfig, c.PortalIf)
	}
	for _, p := range c.Masquerade {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("%w: masquerade %v: %w", ErrInvalidConfig, p, err)
		}
	}
	for _, p := range c.ReachClients {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("%w: reach clients %v: %w", ErrInvalidConfig, p, err)
		}
	}
	for _, ap := range c.ServerEndpoints {
		switch a := ap.Addr(); {
		case !a.IsValid():
			return fmt.Errorf("%w: server endpoint %v: invalid address", ErrInvalidConfig, ap)
		case a.Is4In6():
			return fmt.Errorf("%w: server endpoint %v: IPv4-mapped IPv6 address", ErrInvalidConfig, ap)
		case a.Zone() != "":
			return fmt.Errorf("%w: server endpoint %v: zones are not supported", ErrInvalidConfig, ap)
		case ap.Port() == 0:
			return fmt.Errorf("%w: server endpoint %v: port 0", ErrInvalidConfig, ap)
		}
	}
	return nil
}

// Normalized returns a copy of c, not sharing its slices, with Masquerade
// masked, sorted and deduplicated, ServerEndpoints sorted and
// deduplicated, and ReachClients masked, without the prefixes that another
// one contains, and sorted by address (IPv4 first). Equal normalized
// configs produce identical tables. It does not validate; invalid prefixes
// are kept, in no particular place.
func (c FirewallConfig) Normalized() FirewallConfig {
	masq := make([]netip.Prefix, len(c.Masquerade))
	for i, p := range c.Masquerade {
		masq[i] = p.Masked()
	}
	c.Masquerade = sortedUnique(masq)
	c.ServerEndpoints = slices.Clone(c.ServerEndpoints)
	slices.SortFunc(c.ServerEndpoints, netip.AddrPort.Compare)
	c.ServerEndpoints = slices.Compact(c.ServerEndpoints)
	c.ReachClients = outermostPrefixes(c.ReachClients)
	return c
}

// outermostPrefixes returns ps masked, without the prefixes that another
// one covers (duplicates included), sorted by address and then by length:
// a set of disjoint prefixes covering the same addresses as ps. An nftables
// interval set rejects overlapping elements, so this is what it can hold.
func outermostPrefixes(ps []netip.Prefix) []netip.Prefix {
	sorted := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		sorted[i] = p.Masked()
	}
	// By first address, and the shortest prefix first among those that
	// start at the same one: a prefix that covers another starts at or
	// before it, so it comes first.
	slices.SortFunc(sorted, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := sorted[:0]
	for _, p := range sorted {
		// The kept prefixes are disjoint and sorted, so only the last one
		// can cover p: one further back that covered p would also cover
		// the last one, which would then not have been kept.
		if n := len(out); n > 0 && p.IsValid() && out[n-1].IsValid() &&
			out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// IsZero reports whether c asks for no rules at all.
func (c FirewallConfig) IsZero() bool {
	return len(c.Masquerade) == 0 && !c.ClampMSS && !c.KillSwitch && !c.IsolateClients
}

// Firewall converges the table of one instance (FirewallTable) to a
// desired FirewallConfig. There must be at most one Firewall per instance
// and network namespace: they would share the table.
//
// Implementations are safe for concurrent use; calls are serialized.
type Firewall interface {
	// Set replaces the content of the instance's table with the rules cfg
	// asks for, creating the table if needed, in one atomic nftables
	// transaction: packets see either the old rules or the new ones,
	// never a table without the kill switch. On error nothing changed.
	// Set is idempotent; repeating it also repairs rules that someone
	// else changed inside the table. The zero cfg leaves an empty table.
	//
	// Set returns ErrClosed after Close and an error wrapping
	// ErrInvalidConfig if cfg.Validate fails.
	Set(ctx context.Context, cfg FirewallConfig) error

	// IsolationDrops returns how many packets client isolation
	// (FirewallConfig.IsolateClients) has dropped since this Firewall
	// was created: a counter that never decreases, meant to be exported
	// as a metric. Set carries the count over when it replaces the table,
	// and it keeps the count while isolation is off; packets dropped
	// while Set is replacing the table may be missed. It is 0 until a Set
	// turns isolation on.
	//
	// IsolationDrops returns ErrClosed after Close, and an error if the
	// counter cannot be read (for example because someone deleted the
	// table; the next Set puts it back, with the count it last read).
	IsolationDrops() (uint64, error)

	// Close deletes the instance's table, including one left behind by
	// an earlier process, and releases the Firewall's resources. After
	// Close, Set returns ErrClosed; Close is idempotent.
	Close() error
}

// FirewallOptions configures NewFirewall and CleanupFirewall. Instance is
// required.
type FirewallOptions struct {
	// Instance names the instance whose table the Firewall owns: its
	// tunnel interface name (--tun), e.g. "tunneld0". The table is inet
	// FirewallTable(Instance). Required; at most 15 bytes, as interface
	// names.
	Instance string
	// NetNS is the path of a network namespace file to work in, such as
	// /var/run/netns/NAME or /proc/PID/ns/net. Empty means the network
	// namespace of the process.
	NetNS string
	// Logger receives one record per table change. Nil discards.
	Logger *slog.Logger
}

// validate checks that Instance names an interface.
func (o FirewallOptions) validate() error {
	if o.Instance == "" {
		return fmt.Errorf("%w: no instance (tunnel interface name) for the nftables table", ErrInvalidConfig)
	}
	if len(o.Instance) > 15 {
		return fmt.Errorf("%w: instance %q longer than 15 bytes", ErrInvalidConfig, o.Instance)
	}
	return nil
}
