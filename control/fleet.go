package control

import (
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"
)

// FleetSession is one client identity with a session on some gateway of
// a fleet, as the session directory in the store says: tunneld's answer
// to "clients --fleet", sorted by identity.
type FleetSession struct {
	Identity  string       `json:"identity"`
	Gateway   string       `json:"gateway"`             // the gateway holding its session
	Addresses []netip.Addr `json:"addresses,omitempty"` // its leased tunnel addresses, as last seen
	Here      bool         `json:"here"`                // held by the gateway that answered
}

// WriteFleetSessions renders the fleet's sessions as a table, one
// identity a line, and how many gateways hold them.
func WriteFleetSessions(w io.Writer, list []FleetSession) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no clients connected to any gateway of the fleet")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tGATEWAY\tADDRESSES")
	gateways := map[string]bool{}
	for _, s := range list {
		gw := s.Gateway
		if s.Here {
			gw += " (this one)"
		}
		gateways[s.Gateway] = true
		addrs := joinList(s.Addresses)
		if addrs == "" {
			addrs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Identity, gw, addrs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d sessions on %d gateways\n", len(list), len(gateways))
	return err
}
