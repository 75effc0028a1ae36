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
// Unknown keys are errors, so a typo cannot silently weaken a policy. The
// file is read as YAML nodes rather than decoded into Go types, so every
// error names its line in the words of the file, never a Go type.

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"tlsvpn/server"
	"tlsvpn/state"
	"tlsvpn/tunnel"
)

// clientEntry is one client's policy from the --clients file.
type clientEntry = server.ClientPolicy

// clientPolicies is a parsed --clients file, by certificate name.
type clientPolicies = server.Policies

// clientKeys are the keys of a client's entry in the --clients file.
var clientKeys = []string{"address", "routes", "advertise", "reach_clients"}

// yamlEntry is the file form of clientEntry: the values as written, with
// the lines they are on for errors. A nil list or node was not given.
type yamlEntry struct {
	line         int // of the client's name
	address      []yamlValue
	routes       []yamlValue // nil: not given; empty: given as []
	advertise    []yamlValue
	reachClients *yaml.Node
}

// yamlValue is one scalar of a list, and its line.
type yamlValue struct {
	s    string
	line int
}

// lineError is an error located in the --clients file.
func lineError(line int, format string, args ...any) error {
	return fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...))
}

// loadClients reads and validates a --clients file against the address
// pools (pool6 nil when there is no IPv6 pool). Errors start with the file
// and, where it applies, the line.
func loadClients(path string, pool, pool6 state.Leases) (clientPolicies, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--clients: %w", err)
	}
	c, err := parseClients(b, pool, pool6)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// parseClients parses and validates the YAML of a --clients file.
func parseClients(b []byte, pool, pool6 state.Leases) (clientPolicies, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		// "yaml: line 3: mapping values are not allowed in this context"
		return nil, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return clientsFromNode(&doc, pool, pool6)
}

// clientsFromNode validates the policies in a YAML node (a document, or
// the mapping from certificate names to entries).
func clientsFromNode(n *yaml.Node, pool, pool6 state.Leases) (clientPolicies, error) {
	raw, err := yamlEntries(n)
	if err != nil {
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
			return nil, lineError(y.line, "client %q: a certificate name without surrounding spaces is required", name)
		}
		e := clientEntry{}
		if y.reachClients != nil {
			var reach bool
			if err := y.reachClients.Decode(&reach); err != nil {
				return nil, lineError(y.reachClients.Line, "client %q: reach_clients %q: want true or false", name, y.reachClients.Value)
			}
			e.Reach = &reach
		}
		for _, v := range y.address {
			a, err := netip.ParseAddr(v.s)
			if err != nil || a.Zone() != "" {
				return nil, lineError(v.line, "client %q: address %q: want an IP address such as 100.64.0.10", name, v.s)
			}
			a = a.Unmap()
			p, slot := pool, &e.Addr
			if a.Is6() {
				p, slot = pool6, &e.Addr6
				if pool6 == nil {
					return nil, lineError(v.line, "client %q: IPv6 address %v needs --subnet6", name, a)
				}
			}
			switch {
			case slot.IsValid():
				return nil, lineError(v.line, "client %q: more than one %s address", name, family(a))
			case !p.IsClientAddr(a):
				return nil, lineError(v.line, "client %q: address %v is not a client address of %v", name, a, p.Subnet())
			case owner[a] != "":
				return nil, lineError(v.line, "client %q: address %v is already %q's", name, a, owner[a])
			}
			*slot, owner[a] = a, name
		}
		if y.routes != nil {
			rs, err := prefixes(name, "routes", y.routes)
			if err != nil {
				return nil, err
			}
			if len(rs) > tunnel.MaxRoutes {
				return nil, lineError(y.routes[0].line, "client %q: %d routes, at most %d", name, len(rs), tunnel.MaxRoutes)
			}
			e.Routes = append([]netip.Prefix{}, rs...) // not nil: given, if empty
		}
		adv, err := prefixes(name, "advertise", y.advertise)
		if err != nil {
			return nil, err
		}
		for i, p := range adv {
			switch line := y.advertise[i].line; {
			case p.Bits() == 0:
				return nil, lineError(line, "client %q: advertise %v: a default route cannot be advertised", name, p)
			case p.Overlaps(subnet) || (subnet6.IsValid() && p.Overlaps(subnet6)):
				return nil, lineError(line, "client %q: advertise %v overlaps the tunnel subnet", name, p)
			}
		}
		e.Advertise = adv
		out[name] = e
	}
	return out, nil
}

// yamlEntries reads the mapping from certificate names to entries. It
// checks the shape only: every key known and given once, lists of values
// where lists go; clientsFromNode checks the values.
func yamlEntries(n *yaml.Node) (map[string]yamlEntry, error) {
	n = yamlResolve(n)
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil, nil
		}
		n = yamlResolve(n.Content[0])
	}
	if n.Kind == 0 || yamlNull(n) {
		return nil, nil // an empty file: no policies
	}
	if n.Kind != yaml.MappingNode {
		return nil, lineError(n.Line, "want client certificate names as keys, each with its settings below it (%s); found %s", strings.Join(clientKeys, ", "), yamlKind(n))
	}
	out := map[string]yamlEntry{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamlResolve(n.Content[i]), yamlResolve(n.Content[i+1])
		if err := yamlKey(k); err != nil {
			return nil, err
		}
		name := k.Value
		if yamlNull(k) {
			name = ""
		}
		if prev, ok := out[name]; ok {
			return nil, lineError(k.Line, "client %q is listed twice (first on line %d)", name, prev.line)
		}
		e := yamlEntry{line: k.Line}
		switch {
		case yamlNull(v): // "plain:" with nothing below: the defaults
		case v.Kind != yaml.MappingNode:
			return nil, lineError(v.Line, "client %q: want its settings (%s) below it, found %s", name, strings.Join(clientKeys, ", "), yamlKind(v))
		}
		seen := map[string]int{}
		for j := 0; v.Kind == yaml.MappingNode && j+1 < len(v.Content); j += 2 {
			fk, fv := yamlResolve(v.Content[j]), yamlResolve(v.Content[j+1])
			if err := yamlKey(fk); err != nil {
				return nil, err
			}
			key := fk.Value
			if !slices.Contains(clientKeys, key) {
				return nil, lineError(fk.Line, "unknown key %q in client %q (known: %s)", key, name, strings.Join(clientKeys, ", "))
			}
			if first, ok := seen[key]; ok {
				return nil, lineError(fk.Line, "client %q: %s is given twice (first on line %d)", name, key, first)
			}
			seen[key] = fk.Line
			var err error
			switch key {
			case "address":
				e.address, err = yamlValues(name, key, fv)
			case "routes":
				e.routes, err = yamlValues(name, key, fv)
				if e.routes == nil && err == nil && !yamlNull(fv) {
					e.routes = []yamlValue{} // given as []: push no routes
				}
			case "advertise":
				e.advertise, err = yamlValues(name, key, fv)
			case "reach_clients":
				if fv.Kind != yaml.ScalarNode {
					return nil, lineError(fv.Line, "client %q: reach_clients: want true or false, found %s", name, yamlKind(fv))
				}
				if !yamlNull(fv) {
					e.reachClients = fv
				}
			}
			if err != nil {
				return nil, err
			}
		}
		out[name] = e
	}
	return out, nil
}

// yamlValues reads the value of key, a single value or a list of values
// (null: not given).
func yamlValues(name, key string, n *yaml.Node) ([]yamlValue, error) {
	switch {
	case yamlNull(n):
		return nil, nil
	case n.Kind == yaml.ScalarNode:
		return []yamlValue{{n.Value, n.Line}}, nil
	case n.Kind != yaml.SequenceNode:
		return nil, lineError(n.Line, "client %q: %s: want a value or a list of values, found %s", name, key, yamlKind(n))
	}
	var out []yamlValue
	for _, c := range n.Content {
		c = yamlResolve(c)
		if c.Kind != yaml.ScalarNode || yamlNull(c) {
			return nil, lineError(c.Line, "client %q: %s: want a list of values, found %s in it", name, key, yamlKind(c))
		}
		out = append(out, yamlValue{c.Value, c.Line})
	}
	return out, nil
}

// yamlKey checks that a mapping key is a plain value.
func yamlKey(k *yaml.Node) error {
	switch {
	case k.Kind != yaml.ScalarNode:
		return lineError(k.Line, "want a name as the key, found %s", yamlKind(k))
	case k.ShortTag() == "!!merge":
		return lineError(k.Line, "merge keys (<<) are not supported: write each setting out")
	}
	return nil
}

// yamlResolve follows an alias (*name) to the node it stands for.
func yamlResolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// yamlNull reports whether n is an explicit or empty null.
func yamlNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// yamlKind describes what n is in the words of YAML, not of Go.
func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if yamlNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "something else"
}

// prefixes parses the CIDRs of a client's key, refusing host bits
// (198.18.20.1/24 is more likely a typo than a network) and IPv4-mapped
// IPv6.
func prefixes(name, key string, vs []yamlValue) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vs {
		p, err := netip.ParsePrefix(v.s)
		switch {
		case err != nil:
			return nil, lineError(v.line, "client %q: %s: %q: want a CIDR such as 198.18.20.0/24", name, key, v.s)
		case p.Addr().Is4In6():
			return nil, lineError(v.line, "client %q: %s: %q: IPv4-mapped IPv6; write the IPv4 prefix", name, key, v.s)
		case p.Masked() != p:
			return nil, lineError(v.line, "client %q: %s: %q has host bits set; did you mean %v?", name, key, v.s, p.Masked())
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

// parseClientsNode validates the policies under the clients key of a config
// file; errors start with the file and the line.
func parseClientsNode(file string, n *yaml.Node, pool, pool6 state.Leases) (clientPolicies, error) {
	c, err := clientsFromNode(n, pool, pool6)
	if err != nil {
		return nil, atLine(file, err)
	}
	return c, nil
}

// atLine puts file before an error of the policy: "line 8: client ..."
// becomes "tunneld.yaml:8: client ...", the form of every other error
// about the config file.
func atLine(file string, err error) error {
	var line int
	msg := err.Error()
	if _, scanErr := fmt.Sscanf(msg, "line %d: ", &line); scanErr == nil {
		rest := strings.TrimPrefix(msg, fmt.Sprintf("line %d: ", line))
		return fmt.Errorf("%s:%d: %s", file, line, rest)
	}
	return fmt.Errorf("%s: %w", file, err)
}
