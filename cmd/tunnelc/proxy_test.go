package main

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"tlsvpn/cmd/internal/cli"
)

// TestProxyFor: --proxy wins over the environment, 'none' turns both off,
// NO_PROXY is respected, and a password on the command line is warned
// about without being logged.
func TestProxyFor(t *testing.T) {
	env := map[string]string{"https_proxy": "http://envproxy:3128", "ALL_PROXY": "socks5://allproxy:1080"}
	tests := []struct {
		name            string
		o               options
		env             map[string]string
		wantRaw, wantBy string
		wantWarn        bool
	}{
		{name: "flag", o: options{proxy: "socks5://p:1080", proxySet: true}, env: env, wantRaw: "socks5://p:1080", wantBy: "--proxy"},
		{name: "none", o: options{proxy: "none", proxySet: true}, env: env},
		{name: "empty is none", o: options{proxy: "", proxySet: true}, env: env},
		{name: "environment", env: env, wantRaw: "http://envproxy:3128", wantBy: "https_proxy"},
		{name: "all_proxy", env: map[string]string{"ALL_PROXY": "socks5://allproxy:1080"}, wantRaw: "socks5://allproxy:1080", wantBy: "ALL_PROXY"},
		{name: "no_proxy", env: map[string]string{"HTTPS_PROXY": "http://envproxy:3128", "NO_PROXY": "example.com"}},
		{name: "no_proxy for one of two servers", o: options{servers: []string{"vpn.example.com:443", "vpn.example.net:443"}},
			env: map[string]string{"HTTPS_PROXY": "http://envproxy:3128", "NO_PROXY": "example.com"}, wantRaw: "http://envproxy:3128", wantBy: "HTTPS_PROXY"},
		{name: "password on the command line", o: options{proxy: "http://alice:s3cret@p:3128", proxySet: true, proxyOnCmdline: true},
			wantRaw: "http://alice:s3cret@p:3128", wantBy: "--proxy", wantWarn: true},
		{name: "password in the config file", o: options{proxy: "http://alice:s3cret@p:3128", proxySet: true},
			wantRaw: "http://alice:s3cret@p:3128", wantBy: "--proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.o.servers == nil {
				tt.o.servers = []string{"vpn.example.com:443"}
			}
			var logs bytes.Buffer
			raw, by, _ := proxyFor(tt.o, func(k string) string { return tt.env[k] }, slog.New(slog.NewTextHandler(&logs, nil)))
			if raw != tt.wantRaw || by != tt.wantBy {
				t.Errorf("proxyFor = %q from %q, want %q from %q", raw, by, tt.wantRaw, tt.wantBy)
			}
			if warned := strings.Contains(logs.String(), "--proxy-auth-file"); warned != tt.wantWarn {
				t.Errorf("warned %v, want %v:\n%s", warned, tt.wantWarn, &logs)
			}
			if strings.Contains(logs.String(), "s3cret") {
				t.Errorf("the log shows the password:\n%s", &logs)
			}
		})
	}
}

// TestCheckProxy: 'tunnelc check' reads proxy and proxy-auth-file from
// the config file and names the line of a problem, never the password.
func TestCheckProxy(t *testing.T) {
	files := testFiles(t)
	dir := t.TempDir()
	auth := filepath.Join(dir, "proxy-auth")
	writeFile(t, auth, "alice:s3cret\n")
	bad := filepath.Join(dir, "bad-auth")
	writeFile(t, bad, "s3cret\n")
	for _, tc := range []struct {
		name, file string
		want       string // "ok", or a line of the output
	}{
		{"http with a file", "server: vpn.example.com:443\n" + files + "proxy: http://proxy.example.com:3128\nproxy-auth-file: " + auth + "\n", "ok"},
		{"socks5", "server: vpn.example.com:443\n" + files + "proxy: socks5://198.18.0.9:1080\n", "ok"},
		{"none", "server: vpn.example.com:443\n" + files + "proxy: none\n", "ok"},
		{"bad scheme", "server: vpn.example.com:443\n" + files + "proxy: ftp://alice:s3cret@p:21\n",
			`tunnelc.yaml:5: proxy: proxy ftp://alice:xxxxx@p:21: scheme "ftp" not supported`},
		{"credentials twice", "server: vpn.example.com:443\n" + files + "proxy: http://alice:s3cret@p:3128\nproxy-auth-file: " + auth + "\n",
			"tunnelc.yaml:6: proxy-auth-file: the proxy URL holds a user and password too"},
		{"local proxy with full tunnel", "server: vpn.example.com:443\n" + files + "proxy: socks5://127.0.0.1:1080\nfull-tunnel: true\n",
			"tunnelc.yaml:5: proxy: socks5://127.0.0.1:1080 is on this host: it cannot be used with full-tunnel"},
		{"bad auth file", "server: vpn.example.com:443\n" + files + "proxy: http://p:3128\nproxy-auth-file: " + bad + "\n",
			"tunnelc.yaml:6: proxy-auth-file: " + bad + ": want USER:PASSWORD on the first line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tunnelc.yaml")
			writeFile(t, path, tc.file)
			out, err := runCmd("check", "--config", path)
			out = strings.ReplaceAll(out, path, "tunnelc.yaml")
			if tc.want == "ok" {
				if err != nil || out != "tunnelc.yaml: ok\n" {
					t.Fatalf("check = %v, output:\n%s", err, out)
				}
				return
			}
			if cli.ExitCode(err) != cli.ExitFailure || !strings.Contains(out, tc.want) {
				t.Errorf("check = %v, output:\n%s\nwant a line %q", err, out, tc.want)
			}
			if strings.Contains(out, "s3cret") {
				t.Errorf("check shows the password:\n%s", out)
			}
		})
	}
}
