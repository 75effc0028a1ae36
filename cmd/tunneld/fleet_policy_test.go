package main

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"tlsvpn/routing"
	"tlsvpn/server"
	"tlsvpn/state"
	"tlsvpn/state/etcdtest"
)

// TestFleetPublishClients: 'tunneld fleet publish-clients' publishes a
// policy that validates (as 'tunneld check' and a reload validate it) and
// refuses, writing nothing, one that does not parse or validate, with
// FILE:LINE; a gateway's configuration with state etcd reads a published
// policy with the same parser.
func TestFleetPublishClients(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	pki := checkPKI(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "tunneld.yaml")
	writeTestFile(t, config, "cert: "+filepath.Join(pki, "vpn.example.com.crt")+"\nkey: "+filepath.Join(pki, "vpn.example.com.key")+
		"\nca: "+filepath.Join(pki, "ca.crt")+"\nsubnet: 100.64.0.0/24\nstate: etcd\netcd-endpoints: ["+strings.Join(c.Endpoints(), ", ")+"]\n"+
		"etcd-prefix: /fleet-a/\ngateway-name: gw-a\n")
	published := func() string {
		t.Helper()
		cli, err := state.DialEtcd(state.EtcdOptions{Endpoints: c.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		resp, err := cli.Get(t.Context(), state.PolicyKey("/fleet-a/"))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	publish := func(name, policy string) (string, error) {
		t.Helper()
		path := filepath.Join(dir, name)
		writeTestFile(t, path, policy)
		var out, errOut strings.Builder
		err := run(t.Context(), []string{"fleet", "publish-clients", path, "--config", config}, &out, &errOut)
		return strings.ReplaceAll(out.String()+errOut.String(), dir+"/", ""), err
	}

	good := "laptop:\n  address: 100.64.0.10\n  routes: [198.18.10.0/24]\nsite-b:\n  advertise: [198.18.20.0/24]\n"
	out, err := publish("clients.yaml", good)
	if err != nil || !strings.Contains(out, "published clients.yaml (2 clients) to ") || !strings.Contains(out, "/fleet-a/clients (revision ") {
		t.Fatalf("publish-clients = %v, output %q", err, out)
	}
	if got := published(); got != good {
		t.Fatalf("etcd holds %q; want the file as published", got)
	}

	for _, tc := range []struct {
		name, policy string
		line         int
		msg          string
	}{
		{"does not parse", "laptop:\n  address: [100.64.0.10\n", 1, "did not find expected"},
		{"address outside the subnet", "laptop:\n  routes: [198.18.10.0/24]\nphone:\n  address: 100.64.1.10\n",
			4, `client "phone": address 100.64.1.10 is not a client address of 100.64.0.0/24`},
		{"unknown key", "laptop:\n  route: [198.18.10.0/24]\n", 2, `unknown key "route" in client "laptop"`},
		{"one address for two clients", "a:\n  address: 100.64.0.10\nb:\n  address: 100.64.0.10\n", 4, `client "b": address 100.64.0.10 is already "a"'s`},
	} {
		_, err := publish("bad.yaml", tc.policy)
		want := fmt.Sprintf("bad.yaml:%d: %s", tc.line, tc.msg)
		if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), dir+"/", ""), want) || !strings.Contains(err.Error(), tc.msg) ||
			!strings.Contains(err.Error(), "nothing published") {
			t.Errorf("%s: publish-clients = %v; want %q", tc.name, err, want)
		}
		// 'tunneld check' refuses the file as --clients for the same reason.
		checkOut, checkErr := runCheckCmd(t, "--config", config, "--clients", filepath.Join(dir, "bad.yaml"))
		if checkErr == nil || !strings.Contains(checkOut, tc.msg) || !strings.Contains(checkOut, fmt.Sprintf("line %d: ", tc.line)) {
			t.Errorf("%s: check --clients = %v, %q; want %q at line %d", tc.name, checkErr, checkOut, tc.msg, tc.line)
		}
		if got := published(); got != good {
			t.Fatalf("%s: a refused policy changed etcd to %q", tc.name, got)
		}
	}

	// A gateway reads the published policy with the --clients parser.
	var o options
	fs := testFlagSet(&o)
	addFleetFlags(fs, &o.fleetFlags)
	if err := fs.Parse([]string{"--state", "etcd", "--etcd-endpoints", c.Endpoints()[0], "--gateway-name", "gw-a"}); err != nil {
		t.Fatal(err)
	}
	cfg := serverConfig(o, settings{})
	if cfg.State != server.StateEtcd || cfg.ParsePolicy == nil {
		t.Fatalf("server config with state etcd: state %q, ParsePolicy set %v", cfg.State, cfg.ParsePolicy != nil)
	}
	pool, err := routing.NewPool(netip.MustParsePrefix("100.64.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	clients, err := cfg.ParsePolicy([]byte(good), pool, nil)
	if err != nil || clients["laptop"].Addr != netip.MustParseAddr("100.64.0.10") || len(clients["site-b"].Advertise) != 1 {
		t.Fatalf("ParsePolicy of the published policy = %+v, %v", clients, err)
	}
	if _, err := cfg.ParsePolicy([]byte("laptop:\n  route: x\n"), pool, nil); err == nil || !strings.HasPrefix(err.Error(), "line 2: ") {
		t.Errorf("ParsePolicy of a bad policy = %v; want an error at line 2", err)
	}

	// The command's usage errors.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fleet", "publish-clients"}, "want one clients policy FILE, got 0"},
		{[]string{"fleet", "publish-clients", "clients.yaml"}, `state is "file"`},
	} {
		var out strings.Builder
		if err := run(t.Context(), tc.args, &out, &out); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tunneld %s = %v; want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// TestClientsFleetHelp: 'tunneld clients --help' offers --fleet.
func TestClientsFleetHelp(t *testing.T) {
	var out strings.Builder
	run(t.Context(), []string{"clients", "--help"}, &out, &out)
	for _, want := range []string{"--fleet", "which gateway holds each", "$ tunneld clients --fleet", "3 sessions on 2 gateways"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tunneld clients --help lacks %q:\n%s", want, out.String())
		}
	}
}
