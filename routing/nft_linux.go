package routing

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Base chains of an instance's table (FirewallTable), by name as `nft list`
// shows them. Only the chains a FirewallConfig needs exist; a Set that no
// longer needs one removes it with the rest of the old table.
const (
	// type nat hook postrouting priority srcnat
	chainMasquerade = "masquerade"
	// type filter hook forward priority mangle: before any filter chain
	// of the forward hook, so the clamped SYN is what they see.
	chainClampMSS = "clamp_mss"
	// type filter hook output/forward priority filter, policy drop
	chainKillOutput  = "killswitch_output"
	chainKillForward = "killswitch_forward"
	// type filter hook forward priority filter, policy accept
	chainIsolate = "isolate_clients"
)

// Sets and stateful objects of an instance's table, by name.
const (
	// type ipv4_addr / ipv6_addr, flags interval: FirewallConfig.ReachClients
	setReachClients4 = "reach_clients4"
	setReachClients6 = "reach_clients6"
	// The counter of the client isolation drop rule, named so that
	// IsolationDrops can read it with one request and Set can carry its
	// value over to the new table.
	counterIsolationDrops = "isolation_drops"
)

// NewFirewall returns a Firewall that manages the table of opts.Instance
// (FirewallTable) through nftables netlink (github.com/google/nftables), in
// the network namespace named by opts.NetNS. It checks that nftables can be reached there (root,
// or CAP_NET_ADMIN, is needed) but changes nothing until Set.
//
// Rules are independent of other tables: a packet dropped by any base
// chain of any table is dropped, so the kill switch holds whatever other
// tables accept, and the kill switch's accepts do not override their drops.
func NewFirewall(opts FirewallOptions) (Firewall, error) {
	f, err := newFirewall(opts)
	if err != nil {
		return nil, err // not a nil *linuxFirewall in a non-nil Firewall
	}
	return f, nil
}

func newFirewall(opts FirewallOptions) (*linuxFirewall, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	f := &linuxFirewall{table: FirewallTable(opts.Instance), log: opts.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if opts.NetNS != "" {
		ns, err := os.Open(opts.NetNS)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", opts.NetNS, err)
		}
		f.ns = ns
	}
	if _, err := f.conn().ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		f.closeNS()
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	return f, nil
}

// CleanupFirewall deletes the table of opts.Instance (FirewallTable), if
// present, in the network namespace named by opts.NetNS: what a crashed
// process left behind. It is what Firewall.Close does, without needing the
// Firewall. Tables of other instances are left alone.
//
// It also deletes the table of older versions (LegacyFirewallTable, which
// all instances shared) when that table belongs to opts.Instance or to no
// running process: when every interface its rules name is opts.Instance,
// the loopback, or gone (a TUN device vanishes with the process that made
// it). A legacy table whose rules name another existing interface may
// belong to an older daemon still running: it is kept, and the log says so.
func CleanupFirewall(ctx context.Context, opts FirewallOptions) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", FirewallTable(opts.Instance), err)
	}
	f, err := newFirewall(opts)
	if err != nil {
		return err
	}
	errLegacy := f.cleanupLegacy()
	return errors.Join(f.Close(), errLegacy)
}

// cleanupLegacy deletes the LegacyFirewallTable if it belongs to f's
// instance or to no running process; see CleanupFirewall.
func (f *linuxFirewall) cleanupLegacy() error {
	c := f.conn()
	legacy := &nftables.Table{Name: LegacyFirewallTable, Family: nftables.TableFamilyINet}
	if _, err := c.ListTableOfFamily(legacy.Name, legacy.Family); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("look for nftables table inet %s: %w", LegacyFirewallTable, err)
	}
	names, err := legacyInterfaces(c, legacy)
	if err != nil {
		return err
	}
	instance := f.table[len(FirewallTable("")):]
	for _, name := range names {
		if name == instance || name == "lo" {
			continue
		}
		exists, err := f.linkExists(name)
		if err != nil {
			return err
		}
		if exists {
			f.log.Warn("kept the nftables table of an older tlsvpn: its interface exists, so its daemon may still run; delete it with nft once that one has stopped",
				"table", "inet "+LegacyFirewallTable, "ifname", name)
			return nil
		}
	}
	c.DelTable(legacy)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", LegacyFirewallTable, err)
	}
	f.log.Info("deleted the nftables table an older tlsvpn left behind", "table", "inet "+LegacyFirewallTable, "ifnames", names)
	return nil
}

// legacyInterfaces returns the interface names that the rules of table t
// compare iifname or oifname with.
func legacyInterfaces(c *nftables.Conn, t *nftables.Table) ([]string, error) {
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	var names []string
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != t.Name {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain inet %s %s: %w", t.Name, ch.Name, err)
		}
		for _, r := range rules {
			names = append(names, ruleInterfaces(r.Exprs)...)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// ruleInterfaces returns the names that exprs compare the input or output
// interface name with (matchIfname's shape: meta, then cmp on its register).
func ruleInterfaces(exprs []expr.Any) []string {
	var names []string
	for i := 0; i+1 < len(exprs); i++ {
		m, ok := exprs[i].(*expr.Meta)
		if !ok || (m.Key != expr.MetaKeyIIFNAME && m.Key != expr.MetaKeyOIFNAME) {
			continue
		}
		if cmp, ok := exprs[i+1].(*expr.Cmp); ok && cmp.Register == m.Register {
			if name := string(bytes.TrimRight(cmp.Data, "\x00")); name != "" {
				names = append(names, name)
			}
		}
	}
	return names
}

// linkExists reports whether an interface named name exists in f's
// network namespace.
func (f *linuxFirewall) linkExists(name string) (bool, error) {
	var h *netlink.Handle
	var err error
	if f.ns == nil {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandleAt(netns.NsHandle(f.ns.Fd()))
	}
	if err != nil {
		return false, fmt.Errorf("open rtnetlink handle: %w", err)
	}
	defer h.Close()
	if _, err := h.LinkByName(name); err != nil {
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) {
			return false, nil
		}
		return false, fmt.Errorf("find link %s: %w", name, err)
	}
	return true, nil
}

// linuxFirewall implements Firewall. Every operation is one nftables
// transaction (a netlink batch), which the kernel applies completely or not
// at all.
type linuxFirewall struct {
	// Immutable after NewFirewall.
	table string   // FirewallTable(instance)
	ns    *os.File // network namespace to work in; nil: the process's
	log   *slog.Logger

	mu     sync.Mutex
	closed bool           // guarded by mu
	last   FirewallConfig // guarded by mu; normalized, last successful Set
	set    bool           // guarded by mu; last is valid
	// Guarded by mu. drops is the running total of the isolation drop
	// counter; kernelDrops is what the kernel counter held when last read
	// or written, so that a read adds only what is new.
	drops, kernelDrops nftCount
}

// nftCount is the value of an nftables counter.
type nftCount struct{ packets, bytes uint64 }

// conn returns a new nftables connection. A fresh Conn per transaction,
// because a Conn keeps the first message encoding error forever.
func (f *linuxFirewall) conn() *nftables.Conn {
	if f.ns == nil {
		c, _ := nftables.New() // cannot fail without AsLasting
		return c
	}
	c, _ := nftables.New(nftables.WithNetNSFd(int(f.ns.Fd())))
	return c
}

func (f *linuxFirewall) closeNS() {
	if f.ns != nil {
		f.ns.Close()
	}
}

func (f *linuxFirewall) Set(ctx context.Context, cfg FirewallConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.Normalized()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("set nftables table inet %s: %w", f.table, err)
	}
	if f.set && f.last.IsolateClients {
		// The new table starts its counter where the old one is now.
		// Failing to read (someone deleted the table) must not stop Set
		// from repairing it: the count then resumes from the last read.
		_ = f.readDropsLocked()
	}

	c := f.conn()
	t := f.nftTable()
	// Add (a no-op if the table exists), delete, and build again from
	// nothing, all in one transaction: whatever the table held before, it
	// ends up holding exactly cfg's rules, and no packet ever sees it
	// half-built or empty.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	if err := addFirewallRules(c, t, cfg, f.drops); err != nil {
		return fmt.Errorf("set nftables table inet %s: %w", f.table, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("set nftables table inet %s: %w", f.table, err)
	}
	if cfg.IsolateClients {
		f.kernelDrops = f.drops
	}

	level := slog.LevelInfo
	if f.set && f.last.equal(cfg) {
		level = slog.LevelDebug // re-applied, nothing changed
	}
	f.last, f.set = cfg, true
	f.log.Log(ctx, level, "set nftables table",
		"table", "inet "+f.table,
		"tunnel_if", cfg.TunnelIf,
		"masquerade", cfg.Masquerade,
		"clamp_mss", cfg.ClampMSS,
		"kill_switch", cfg.KillSwitch,
		"server_endpoints", cfg.ServerEndpoints,
		"portal_if", cfg.PortalIf,
		"isolate_clients", cfg.IsolateClients,
		"reach_clients", cfg.ReachClients)
	return nil
}

func (f *linuxFirewall) IsolationDrops() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, ErrClosed
	}
	if f.set && f.last.IsolateClients {
		if err := f.readDropsLocked(); err != nil {
			return 0, err
		}
	}
	return f.drops.packets, nil
}

// readDropsLocked adds to f.drops what the kernel's isolation drop counter
// counted since it was last read or created. A counter that went down was
// reset (`nft reset counter`) and has counted everything it holds since.
func (f *linuxFirewall) readDropsLocked() error {
	o, err := f.conn().GetObject(&nftables.CounterObj{Table: f.nftTable(), Name: counterIsolationDrops})
	if err != nil {
		return fmt.Errorf("read nftables counter inet %s %s: %w", f.table, counterIsolationDrops, err)
	}
	co, ok := o.(*nftables.CounterObj)
	if !ok {
		return fmt.Errorf("read nftables counter inet %s %s: got %T", f.table, counterIsolationDrops, o)
	}
	now := nftCount{packets: co.Packets, bytes: co.Bytes}
	since := now
	if now.packets >= f.kernelDrops.packets && now.bytes >= f.kernelDrops.bytes {
		since = nftCount{now.packets - f.kernelDrops.packets, now.bytes - f.kernelDrops.bytes}
	}
	f.drops.packets += since.packets
	f.drops.bytes += since.bytes
	f.kernelDrops = now
	return nil
}

func (f *linuxFirewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	defer f.closeNS()

	c := f.conn()
	t := f.nftTable()
	c.AddTable(t) // so that deleting an absent table is not an error
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", f.table, err)
	}
	f.log.Info("deleted nftables table", "table", "inet "+f.table)
	return nil
}

// equal reports whether two normalized configs are the same.
func (c FirewallConfig) equal(d FirewallConfig) bool {
	return c.TunnelIf == d.TunnelIf && c.ClampMSS == d.ClampMSS && c.KillSwitch == d.KillSwitch &&
		c.IsolateClients == d.IsolateClients && c.PortalIf == d.PortalIf && c.ProbeMark == d.ProbeMark &&
		slices.Equal(c.Masquerade, d.Masquerade) && slices.Equal(c.ServerEndpoints, d.ServerEndpoints) &&
		slices.Equal(c.ReachClients, d.ReachClients)
}

func (f *linuxFirewall) nftTable() *nftables.Table {
	return &nftables.Table{Name: f.table, Family: nftables.TableFamilyINet}
}

// addFirewallRules queues the chains, sets, objects and rules of cfg
// (normalized) into c; the isolation drop counter starts at drops. The
// comments show each rule as `nft list` prints it.
func addFirewallRules(c *nftables.Conn, t *nftables.Table, cfg FirewallConfig, drops nftCount) error {
	accept := nftables.ChainPolicyAccept
	drop := nftables.ChainPolicyDrop
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(exprs...)})
	}

	if len(cfg.Masquerade) > 0 {
		ch := c.AddChain(&nftables.Chain{
			Name: chainMasquerade, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
			Policy: &accept,
		})
		for _, p := range cfg.Masquerade {
			// oifname != "tun0" ip saddr 100.64.0.0/10 masquerade
			var oif []expr.Any
			if cfg.TunnelIf != "" {
				oif = matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.TunnelIf)
			}
			rule(ch, oif, matchPrefix(true, p), []expr.Any{&expr.Masq{}})
		}
	}

	if cfg.ClampMSS {
		ch := c.AddChain(&nftables.Chain{
			Name: chainClampMSS, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle,
			Policy: &accept,
		})
		// oifname "tun0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		// iifname "tun0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		for _, key := range []expr.MetaKey{expr.MetaKeyOIFNAME, expr.MetaKeyIIFNAME} {
			rule(ch, matchIfname(key, expr.CmpOpEq, cfg.TunnelIf), clampMSS())
		}
	}

	if cfg.KillSwitch {
		for _, name := range []string{chainKillOutput, chainKillForward} {
			hook := nftables.ChainHookOutput
			if name == chainKillForward {
				hook = nftables.ChainHookForward
			}
			ch := c.AddChain(&nftables.Chain{
				Name: name, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: hook, Priority: nftables.ChainPriorityFilter,
				Policy: &drop,
			})
			for _, e := range killSwitchExceptions(cfg, name == chainKillForward) {
				rule(ch, e, acceptVerdict())
			}
		}
	}

	if cfg.IsolateClients {
		return addIsolation(c, t, cfg, drops)
	}
	return nil
}

// addIsolation queues the client isolation chain, its sets and its counter;
// see FirewallConfig.IsolateClients:
//
//	chain isolate_clients {
//		type filter hook forward priority filter; policy accept;
//		iifname != "tun0" accept
//		oifname != "tun0" accept
//		ct state established,related accept
//		ip saddr @reach_clients4 accept
//		ip6 saddr @reach_clients6 accept
//		counter name "isolation_drops" drop
//	}
//
// Accepting here ends only this chain: other chains of the forward hook,
// in this table (the kill switch) or in others, still see the packet.
func addIsolation(c *nftables.Conn, t *nftables.Table, cfg FirewallConfig, drops nftCount) error {
	c.AddObj(&nftables.CounterObj{Table: t, Name: counterIsolationDrops, Packets: drops.packets, Bytes: drops.bytes})

	var lookups [][]expr.Any
	for i, fam := range []struct {
		name string
		typ  nftables.SetDatatype
		is4  bool
	}{{setReachClients4, nftables.TypeIPAddr, true}, {setReachClients6, nftables.TypeIP6Addr, false}} {
		var ps []netip.Prefix
		for _, p := range cfg.ReachClients {
			if p.Addr().Is4() == fam.is4 {
				ps = append(ps, p)
			}
		}
		// A fixed ID (it need only be unique in the transaction) rather
		// than the library's, which is a global counter incremented
		// without a lock shared between Conns.
		set := &nftables.Set{Table: t, ID: uint32(i + 1), Name: fam.name, KeyType: fam.typ, Interval: true}
		if err := c.AddSet(set, intervalElements(ps)); err != nil {
			return fmt.Errorf("add set %s: %w", fam.name, err)
		}
		// ip saddr @reach_clients4
		lookups = append(lookups, slices.Concat(
			matchNFProto(!fam.is4),
			[]expr.Any{
				addrPayload(true, !fam.is4),
				&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			}))
	}

	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: chainIsolate, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
		Policy: &accept,
	})
	rule := func(exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(exprs...)})
	}
	// Not client to client: none of isolation's business.
	rule(matchIfname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, cfg.TunnelIf), acceptVerdict())
	rule(matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.TunnelIf), acceptVerdict())
	rule(matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), acceptVerdict())
	for _, l := range lookups {
		rule(l, acceptVerdict())
	}
	rule([]expr.Any{
		&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: counterIsolationDrops},
		&expr.Verdict{Kind: expr.VerdictDrop},
	})
	return nil
}

// intervalElements returns the elements of an interval set holding the
// addresses of ps: disjoint prefixes of one family, sorted (as Normalized
// leaves them). Each range is a start element and an end element holding
// the first address after it; adjacent ranges are merged into one, as
// nft's auto-merge would, so the set holds as few elements as it can. A
// range that reaches the last address has no end element, as nft does it.
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	var els []nftables.SetElement
	var end netip.Addr // first address after the last range; invalid: none, or reached the top
	for _, p := range ps {
		first, last := p.Masked().Addr(), lastAddr(p)
		if n := len(els); n > 0 && els[n-1].IntervalEnd && end == first {
			els = els[:n-1] // adjacent: extend the previous range
		} else {
			els = append(els, nftables.SetElement{Key: first.AsSlice()})
		}
		end = last.Next()
		if end.IsValid() {
			els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// matchCtState matches packets whose conntrack state is one of the
// expr.CtStateBit* in states (ct state established,related). The state is
// a bitmask in host byte order.
func matchCtState(states uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, states), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// killSwitchExceptions returns the matches of the packets the kill switch
// lets through; see FirewallConfig.KillSwitch.
func killSwitchExceptions(cfg FirewallConfig, forward bool) [][]expr.Any {
	ms := [][]expr.Any{
		matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, "lo"),         // oifname "lo"
		matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, cfg.TunnelIf), // oifname "tun0"
	}
	if forward {
		ms = append(ms, matchIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, cfg.TunnelIf)) // iifname "tun0"
	} else {
		ms = append(ms, portalExceptions(cfg)...)
	}
	for _, ep := range cfg.ServerEndpoints {
		// ip daddr 192.0.2.1 tcp dport 443
		a := ep.Addr()
		ms = append(ms, slices.Concat(
			matchPrefix(false, netip.PrefixFrom(a, a.BitLen())),
			matchL4(unix.IPPROTO_TCP),
			matchPort(false, ep.Port()),
		))
	}
	// meta nfproto ipv4 udp sport 68 udp dport 67
	ms = append(ms, slices.Concat(
		matchNFProto(false), matchL4(unix.IPPROTO_UDP), matchPort(true, 68), matchPort(false, 67)))
	// ip6 saddr fe80::/10 udp sport 546 udp dport 547
	ms = append(ms, slices.Concat(
		matchPrefix(true, netip.MustParsePrefix("fe80::/10")),
		matchL4(unix.IPPROTO_UDP), matchPort(true, 546), matchPort(false, 547)))
	// icmpv6 type nd-router-solicit, ... (one rule each: no anonymous sets
	// to keep the table simple)
	for _, typ := range []byte{
		133, // nd-router-solicit
		135, // nd-neighbor-solicit
		136, // nd-neighbor-advert
		143, // mld2-listener-report
	} {
		ms = append(ms, slices.Concat(matchNFProto(true), matchL4(unix.IPPROTO_ICMPV6), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}},
		}))
	}
	return ms
}

// clampMSS returns `tcp flags syn / syn,rst tcp option maxseg size set rt
// mtu`: SYN and SYN-ACK (not RST) segments that carry an MSS option get it
// lowered to what the MTU of their route allows (NFT_RT_TCPMSS: the route
// MTU minus IP and TCP headers). The kernel only ever lowers the option
// (nft_exthdr_tcp_set_eval: an increase can break the connection).
func clampMSS() []expr.Any {
	const (
		tcpFlagsOffset = 13
		syn, rst       = 0x02, 0x04
		tcpoptMaxseg   = 2 // RFC 9293 MSS option kind; its value is at offset 2, 2 bytes
	)
	return slices.Concat(matchL4(unix.IPPROTO_TCP), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | rst}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{syn}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{SourceRegister: 1, Type: tcpoptMaxseg, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	})
}

func acceptVerdict() []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
}

// matchIfname compares the interface name (meta iifname/oifname) with
// name, NUL-padded to IFNAMSIZ as nft does.
func matchIfname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// matchNFProto matches the packet's family (meta nfproto): in an inet
// table, the dependency every IP header match needs.
func matchNFProto(ipv6 bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	if ipv6 {
		proto = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// matchL4 matches the transport protocol (meta l4proto), the dependency of
// every transport header match.
func matchL4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// matchPrefix matches the source (src) or destination address against p
// (ip saddr 100.64.0.0/10), including the family.
func matchPrefix(src bool, p netip.Prefix) []expr.Any {
	a := p.Addr()
	m := matchNFProto(a.Is6())
	if p.Bits() == 0 {
		return m
	}
	var off uint32
	switch {
	case a.Is4() && src:
		off = 12
	case a.Is4():
		off = 16
	case src:
		off = 8
	default:
		off = 24
	}
	addr := p.Masked().Addr().AsSlice()
	if p.Bits()%8 == 0 {
		// Whole bytes: compare just those, as nft does.
		n := p.Bits() / 8
		return append(m,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(n)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:n]})
	}
	// The whole address, masked: the form nft recognizes as a prefix.
	n := len(addr)
	mask := net.CIDRMask(p.Bits(), 8*n)
	return append(m,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(n)},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr})
}

// addrPayload loads the source (src) or destination address of the IPv4
// or IPv6 (ipv6) header into register 1.
func addrPayload(src, ipv6 bool) *expr.Payload {
	off, n := uint32(16), uint32(4)
	switch {
	case !ipv6 && src:
		off = 12
	case ipv6 && src:
		off, n = 8, 16
	case ipv6:
		off, n = 24, 16
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
}

// matchPort matches the source (src) or destination port of a TCP or UDP
// header; precede it with matchL4.
func matchPort(src bool, port uint16) []expr.Any {
	off := uint32(2)
	if src {
		off = 0
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}
