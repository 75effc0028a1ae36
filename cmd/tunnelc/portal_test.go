package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckPortal: the captive portal settings in a config file, as
// 'tunnelc check' reports them, and in --help.
func TestCheckPortal(t *testing.T) {
	files := testFiles(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, "server: vpn.example.com:443\n"+files+"full-tunnel: true\nkill-switch: true\nportal-window: 2m\nportal-probe: http://198.18.0.1/generate_204\n")
	if out, err := runCmd("check", "--config", good); err != nil || !strings.HasSuffix(out, ": ok\n") {
		t.Errorf("check with portal settings = %v:\n%s", err, out)
	}
	sealed := filepath.Join(dir, "sealed.yaml")
	writeFile(t, sealed, "server: vpn.example.com:443\n"+files+"full-tunnel: true\nkill-switch: true\nno-portal: true\n")
	if out, err := runCmd("check", "--config", sealed); err != nil {
		t.Errorf("check with no-portal = %v:\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "server: vpn.example.com:443\n"+files+"portal-probe: https://example.com/generate_204\nportal-window: -1m\n")
	out, _ := runCmd("check", "--config", bad)
	for _, want := range []string{
		`bad.yaml:5: portal-probe: "https://example.com/generate_204": want an http:// URL`,
		`bad.yaml:6: portal-window: -1m0s: want a positive duration`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	help, _ := runCmd("--help")
	for _, want := range []string{"--portal-probe", "--portal-window", "--no-portal", "Captive portals"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}
