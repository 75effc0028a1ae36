package main

// The per-client policy file (--clients): YAML keyed by certificate name.
//
//	laptop:
//	  address: 100.64.0.10            # fixed tunnel address (IPv4, IPv6, or a list of one of each)
//	  routes: [198.18.10.0/24]        # pushed to this client instead of --route
//	site-b:
//	  address: [100.64.0.20, "fd00:64::20"]
//	  advertise: [198.18.20.0/24]     # networks this client may announce (tunnelc --advertise)
//	  reach_clients: true             # may open connections to other clients
//
// Unknown keys are errors, so a typo cannot silently weaken a policy.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"tlsvpn/routing"
	"tlsvpn/tunnel"
)

// clientEntry is one client's policy from the --clients file.
type clientEntry struct {
	Addr, Addr6 netip.Addr     // fixed tunnel addresses (invalid: from the pool)
	Routes      []netip.Prefix // nil: not given (--route applies); empty: push none
	Advertise   []netip.Prefix
	Reach       *bool // reach_clients; nil: the --client-to-client default
}

// clientPolicies is a parsed --clients file, by certificate name.
type clientPolicies map[string]clientEntry

// policy returns the tunnel.Policy of identity, with reach as the default
// for reach_clients.
func (c clientPolicies) policy(identity string, reach bool) tunnel.Policy {
	e, ok := c[identity]
	if !ok {
		return tunnel.Policy{ReachClients: reach}
	}
	p := tunnel.Policy{Routes: e.Routes, Advertise: e.Advertise, ReachClients: reach}
	if e.Reach != nil {
		p.ReachClients = *e.Reach
	}
	return p
}

// yamlEntry is the file form of clientEntry.
type yamlEntry struct {
	Address      yamlList  `yaml:"address"`
	Routes       *yamlList `yaml:"routes"`
	Advertise    yamlList  `yaml:"advertise"`
	ReachClients *bool     `yaml:"reach_clients"`
}

// yamlList accepts a scalar or a sequence of scalars.
type yamlList []string

func (l *yamlList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*l = nil
			return nil
		}
		*l = yamlList{n.Value}
		return nil
	case yaml.SequenceNode:
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*l = s
		return nil
	}
	return fmt.Errorf("line %d: want a value or a list of values", n.Line)
}

// loadClients reads and validates a --clients file against the address
// pools (pool6 nil when there is no IPv6 pool).
func loadClients(path string, pool, pool6 *routing.Pool) (clientPolicies, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--clients: %w", err)
	}
	c, err := parseClients(b, pool, pool6)
	if err != nil {
		return nil, fmt.Errorf("--clients %s: %w", path, err)
	}
	return c, nil
}

// parseClients parses and validates the YAML of a --clients file.
func parseClients(b []byte, pool, pool6 *routing.Pool) (clientPolicies, error) {
	var raw map[string]yamlEntry
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	subnet, subnet6 := pool.Subnet(), netip.Prefix{}
	if pool6 != nil {
		subnet6 = pool6.Subnet()
	}
	out := clientPolicies{}
	owner := map[netip.Addr]string{}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		y := raw[name]
		if name == "" || strings.TrimSpace(name) != name {
			return nil, fmt.Errorf("client %q: a certificate name without surrounding spaces is required", name)
		}
		e := clientEntry{Reach: y.ReachClients}
		for _, s := range y.Address {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("client %q: address %q: want an IP address such as 100.64.0.10", name, s)
			}
			a = a.Unmap()
			p, slot := pool, &e.Addr
			if a.Is6() {
				p, slot = pool6, &e.Addr6
				if pool6 == nil {
					return nil, fmt.Errorf("client %q: IPv6 address %v needs --subnet6", name, a)
				}
			}
			switch {
			case slot.IsValid():
				return nil, fmt.Errorf("client %q: more than one %s address", name, family(a))
			case !p.IsClientAddr(a):
				return nil, fmt.Errorf("client %q: address %v is not a client address of %v", name, a, p.Subnet())
			case owner[a] != "":
				return nil, fmt.Errorf("client %q: address %v is already %q's", name, a, owner[a])
			}
			*slot, owner[a] = a, name
		}
		if y.Routes != nil {
			rs, err := prefixes(*y.Routes)
			if err != nil {
				return nil, fmt.Errorf("client %q: routes: %w", name, err)
			}
			if len(rs) > tunnel.MaxRoutes {
				return nil, fmt.Errorf("client %q: %d routes, at most %d", name, len(rs), tunnel.MaxRoutes)
			}
			e.Routes = append([]netip.Prefix{}, rs...) // not nil: given, if empty
		}
		adv, err := prefixes(y.Advertise)
		if err != nil {
			return nil, fmt.Errorf("client %q: advertise: %w", name, err)
		}
		for _, p := range adv {
			switch {
			case p.Bits() == 0:
				return nil, fmt.Errorf("client %q: advertise %v: a default route cannot be advertised", name, p)
			case p.Overlaps(subnet) || (subnet6.IsValid() && p.Overlaps(subnet6)):
				return nil, fmt.Errorf("client %q: advertise %v overlaps the tunnel subnet", name, p)
			}
		}
		e.Advertise = adv
		out[name] = e
	}
	return out, nil
}

// prefixes parses CIDRs, refusing host bits (198.18.20.1/24 is more likely
// a typo than a network) and IPv4-mapped IPv6.
func prefixes(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%q: want a CIDR such as 198.18.20.0/24", s)
		case p.Addr().Is4In6():
			return nil, fmt.Errorf("%q: IPv4-mapped IPv6; write the IPv4 prefix", s)
		case p.Masked() != p:
			return nil, fmt.Errorf("%q has host bits set; did you mean %v?", s, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
