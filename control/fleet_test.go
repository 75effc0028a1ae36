package control

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
)

// TestFleetSessions: the JSON of 'tunneld clients --fleet --json' and the
// table of a fleet without sessions.
func TestFleetSessions(t *testing.T) {
	b, err := json.Marshal([]FleetSession{{Identity: "laptop", Gateway: "gw1", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, Here: true}, {Identity: "phone", Gateway: "gw2"}})
	if err != nil {
		t.Fatal(err)
	}
	const want = `[{"identity":"laptop","gateway":"gw1","addresses":["100.64.0.2"],"here":true},{"identity":"phone","gateway":"gw2","here":false}]`
	if string(b) != want {
		t.Errorf("JSON:\n%s\nwant\n%s", b, want)
	}
	var w bytes.Buffer
	if err := WriteFleetSessions(&w, nil); err != nil || w.String() != "no clients connected to any gateway of the fleet\n" {
		t.Errorf("empty fleet: %q, %v", w.String(), err)
	}
}
