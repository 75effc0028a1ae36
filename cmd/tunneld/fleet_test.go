package main

import (
	"path/filepath"
	"strings"
	"testing"

	"tlsvpn/server"
)

// TestCheckFleet: 'tunneld check' validates the state store's settings
// (values, files, what cannot go with state etcd), each at its line, and
// the settings reach the server's configuration.
func TestCheckFleet(t *testing.T) {
	pki := checkPKI(t)
	files := "cert: " + filepath.Join(pki, "vpn.example.com.crt") + "\nkey: " + filepath.Join(pki, "vpn.example.com.key") +
		"\nca: " + filepath.Join(pki, "ca.crt") + "\n"
	etcd := "state: etcd\netcd-endpoints: [https://198.18.1.1:2379, https://198.18.1.2:2379]\n" +
		"etcd-cert: " + filepath.Join(pki, "vpn.example.com.crt") + "\netcd-key: " + filepath.Join(pki, "vpn.example.com.key") +
		"\netcd-ca: " + filepath.Join(pki, "ca.crt") + "\ngateway-name: gw-a\n"
	for _, tc := range []struct {
		name, file string
		want       []string // lines of the output, in order; "ok" means "FILE: ok"
	}{
		{name: "valid", file: files + etcd, want: []string{"ok"}},
		{name: "file state needs no store", file: files + "state: file\n", want: []string{"ok"}},
		{name: "unknown state", file: files + "state: redis\n", want: []string{`tunneld.yaml:4: state: "redis": want file or etcd`}},
		{name: "no endpoints", file: files + "state: etcd\n", want: []string{"--etcd-endpoints: required with state etcd"}},
		{
			name: "bad values",
			file: files + "state: etcd\netcd-endpoints: [198.18.1.1:2379]\netcd-cert: /x.crt\netcd-prefix: tlsvpn\ngateway-name: a/b\ncrl: " + filepath.Join(pki, "crl.pem") + "\n",
			want: []string{
				`tunneld.yaml:5: etcd-endpoints: "198.18.1.1:2379": want a URL`,
				"tunneld.yaml:6: etcd-cert: etcd-cert and etcd-key go together",
				`tunneld.yaml:7: etcd-prefix: "tlsvpn": want a key prefix`,
				`tunneld.yaml:8: gateway-name: "a/b": a name without '/'`,
				"tunneld.yaml:9: crl: with state etcd the fleet's CRL is published in etcd",
			},
		},
		{
			name: "files that do not load",
			file: files + "state: etcd\netcd-endpoints: https://198.18.1.1:2379\netcd-cert: " + filepath.Join(pki, "ca.crt") + "\netcd-key: " + filepath.Join(pki, "vpn.example.com.key") + "\n",
			want: []string{"tunneld.yaml:6: etcd-cert: etcd client certificate: "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tunneld.yaml")
			writeTestFile(t, path, tc.file)
			out, err := runCheckCmd(t, "--config", path)
			out = strings.ReplaceAll(out, path, "tunneld.yaml")
			if tc.want[0] == "ok" {
				if err != nil || out != "tunneld.yaml: ok\n" {
					t.Fatalf("check = %v, output:\n%s\nwant \"tunneld.yaml: ok\"", err, out)
				}
				return
			}
			if err == nil {
				t.Errorf("check passed; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output has no %q:\n%s", w, out)
				}
			}
		})
	}

	// The settings become the server's.
	var o options
	fs := testFlagSet(&o)
	addFleetFlags(fs, &o.fleetFlags)
	if err := fs.Parse([]string{"--state", "etcd", "--etcd-endpoints", "http://127.0.0.1:2379,http://127.0.0.1:2381", "--gateway-name", "gw-b"}); err != nil {
		t.Fatal(err)
	}
	c := serverConfig(o, settings{})
	if c.State != server.StateEtcd || len(c.Etcd.Endpoints) != 2 || c.Etcd.Gateway != "gw-b" || c.Etcd.Prefix != "/tlsvpn/" {
		t.Fatalf("server config: state %q, etcd %+v", c.State, c.Etcd)
	}
}

// TestFleetCommandErrors: 'tunneld fleet' says what it wants.
func TestFleetCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fleet", "bogus"}, `unknown fleet command "bogus"`},
		{[]string{"fleet", "--config", "x"}, "the command comes first"},
		{[]string{"fleet", "publish-crl"}, "want one CRL FILE, got 0"},
		{[]string{"fleet", "publish-crl", "crl.pem"}, `state is "file"`},
	} {
		var out, errOut strings.Builder
		err := run(t.Context(), tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tunneld %s = %v; want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"fleet"}, &out, &out); err == nil || !strings.Contains(out.String(), "publish-crl FILE") {
		t.Errorf("tunneld fleet = %v, %q; want the usage", err, out.String())
	}
}
