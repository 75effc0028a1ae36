package control

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestWriteClientStatusPortal: a captive portal shows in tunnelc status
// with its URL and the hole's state, and in JSON under stable names.
func TestWriteClientStatusPortal(t *testing.T) {
	detected := now.Add(-30 * time.Second)
	tests := []struct {
		name   string
		status ClientStatus
		want   string
	}{
		{"hole open", ClientStatus{State: "backing off", KillSwitch: true,
			Portal: &PortalStatus{URL: "http://portal.example/login", Interface: "wlan0", Detected: detected, OpenUntil: now.Add(4*time.Minute + 10*time.Second)}},
			"captive portal: http://portal.example/login: DNS and TCP 80/443 open on wlan0 for 4m10s more"},
		{"hole closed", ClientStatus{State: "backing off", KillSwitch: true,
			Portal: &PortalStatus{URL: "http://portal.example/login", Interface: "wlan0", Detected: detected}},
			"captive portal: http://portal.example/login (detected 30s ago): the kill switch's hole is closed"},
		{"no kill switch", ClientStatus{State: "backing off",
			Portal: &PortalStatus{URL: "http://portal.example/login", Detected: detected}},
			"captive portal: http://portal.example/login (detected 30s ago): log in with a browser"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteClientStatus(&b, tt.status, now); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(squash(b.String()), tt.want) {
				t.Errorf("WriteClientStatus lacks %q:\n%s", tt.want, b.String())
			}
		})
	}
	var b strings.Builder
	WriteClientStatus(&b, ClientStatus{State: "up"}, now)
	if strings.Contains(b.String(), "portal") {
		t.Errorf("no portal, but status shows one:\n%s", b.String())
	}

	j, _ := json.Marshal(tests[0].status)
	for _, name := range []string{`"portal":{`, `"url":"http://portal.example/login"`, `"interface":"wlan0"`, `"detected_at"`, `"open_until"`} {
		if !strings.Contains(string(j), name) {
			t.Errorf("JSON lacks %s: %s", name, j)
		}
	}
	j, _ = json.Marshal(ClientStatus{})
	if strings.Contains(string(j), "portal") {
		t.Errorf("JSON without a portal carries one: %s", j)
	}
}
