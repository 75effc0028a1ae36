package main

import (
	"path/filepath"
	"testing"

	"tlsvpn/server"
)

func TestStateDirOf(t *testing.T) {
	for _, tc := range []struct {
		o    options
		want string
	}{
		{options{tunName: "tunneld0"}, "/var/lib/tlsvpn/tunneld0"},
		{options{tunName: "vpn1"}, "/var/lib/tlsvpn/vpn1"},
		{options{tunName: "vpn1", stateDir: "/srv/vpn", stateDirSet: true}, "/srv/vpn"},
		{options{tunName: "vpn1", stateDir: "", stateDirSet: true}, ""}, // memory only
	} {
		if got := stateDirOf(tc.o); got != tc.want {
			t.Errorf("stateDirOf(--tun %s, --state-dir %q set %v) = %q, want %q", tc.o.tunName, tc.o.stateDir, tc.o.stateDirSet, got, tc.want)
		}
	}
}

// TestStateDirFromSource: the state directory is the default instance's
// own unless --state-dir is given on the command line or in the config
// file ("" included).
func TestStateDirFromSource(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		file string // config file content; "" for none
		args []string
		want string
	}{
		{"default", "", []string{"--tun", "vpn1"}, "/var/lib/tlsvpn/vpn1"},
		{"flag", "", []string{"--tun", "vpn1", "--state-dir", "/srv/vpn1"}, "/srv/vpn1"},
		{"flag empty", "", []string{"--tun", "vpn1", "--state-dir", ""}, ""},
		{"file", "tun: vpn2\nstate-dir: /srv/vpn2\n", nil, "/srv/vpn2"},
		{"file without", "tun: vpn2\n", nil, "/var/lib/tlsvpn/vpn2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o options
			fs := testFlagSet(&o)
			fs.StringVar(&o.stateDir, "state-dir", server.StateRoot+"/<tun>", "")
			args := tc.args
			if tc.file != "" {
				path := filepath.Join(dir, tc.name+".yaml")
				writeTestFile(t, path, tc.file)
				args = append(args, "--config", path)
			}
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			got, err := newSource(fs, &o).read()
			if err != nil {
				t.Fatal(err)
			}
			if d := stateDirOf(got); d != tc.want {
				t.Errorf("state dir = %q, want %q", d, tc.want)
			}
		})
	}
}
