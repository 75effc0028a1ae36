package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"tlsvpn/certs/certstest"
	"tlsvpn/cmd/internal/cli"
)

// testFiles writes a CA and a client certificate and returns the config
// lines naming them.
func testFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ca := certstest.NewCA(t)
	caFile := ca.WriteFiles(t, dir)
	certFile, keyFile := certstest.WriteCert(t, dir, "laptop", ca.ClientCert(t, "laptop"))
	return "cert: " + certFile + "\nkey: " + keyFile + "\nca: " + caFile + "\n"
}

func runCmd(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	files := testFiles(t)
	for _, tc := range []struct {
		name, file string
		args       []string
		want       []string // lines of the output; "ok" means "FILE: ok"
	}{
		{name: "valid", file: "server: vpn.example.com:443\n" + files + "full-tunnel: true\nkill-switch: true\nadvertise: [198.18.20.0/24]\nrotate-after: 1h\n", want: []string{"ok"}},
		{name: "several servers", file: "server: [vpn1.example.com:443, 192.0.2.2:443]\n" + files + "full-tunnel: true\nkill-switch: true\n", want: []string{"ok"}},
		{name: "one server on the command line replaces the file's list", file: "server: [vpn1.example.com:443, vpn1.example.com:443]\n" + files,
			args: []string{"--server", "192.0.2.1:443"}, want: []string{"ok"}},
		{
			name: "server list values",
			file: "server: [vpn.example.com:443, vpn.example.com:443, vpn2.example.com]\n" + files,
			want: []string{
				`tunnelc.yaml:1: server: "vpn.example.com:443" is given twice`,
				`tunnelc.yaml:1: server: "vpn2.example.com": want HOST:PORT`,
			},
		},
		{name: "the command line completes the file", file: files, args: []string{"--server", "192.0.2.1:443"}, want: []string{"ok"}},
		{
			name: "types",
			file: "server: vpn.example.com:443\nfull-tunnel: maybe\nrotate-after: 1\nmax-attempts: many\nserver-nme: x\n",
			want: []string{
				`tunnelc.yaml:2: full-tunnel: "maybe": want true or false`,
				`tunnelc.yaml:3: rotate-after: "1": want a duration`,
				`tunnelc.yaml:4: max-attempts: "many": want a whole number`,
				`tunnelc.yaml:5: unknown key "server-nme" (did you mean "server-name"?); known: advertise, ca, cert,`,
			},
		},
		{
			name: "values",
			file: files + "server: vpn.example.com\nkill-switch: true\nadvertise: [198.18.20.1/24, 0.0.0.0/0]\ntun: much-too-long-a-name\n",
			want: []string{
				`tunnelc.yaml:4: server: "vpn.example.com": want HOST:PORT`,
				`tunnelc.yaml:5: kill-switch: needs full-tunnel`,
				`tunnelc.yaml:6: advertise: "198.18.20.1/24" has host bits set; did you mean 198.18.20.0/24?`,
				`tunnelc.yaml:6: advertise: "0.0.0.0/0": a default route cannot be advertised`,
				`tunnelc.yaml:7: tun: "much-too-long-a-name": want an interface name`,
			},
		},
		{name: "required", file: "server: vpn.example.com:443\n", want: []string{"--cert: required", "--key: required", "--ca: required"}},
		{name: "set twice", file: files + "server: vpn.example.com:443\nkey: /nonexistent/laptop.key\n", want: []string{`tunnelc.yaml:5: "key" is already set at line 2`}},
		{name: "a file that does not load", file: "server: vpn.example.com:443\n" + strings.Replace(files, "key: ", "key: /nonexistent", 1),
			want: []string{"tunnelc.yaml:3: key: stat /nonexistent"}},
		{name: "a certificate that does not load", file: "server: vpn.example.com:443\n" + strings.Replace(files, "cert: ", "cert: /dev/null #", 1),
			want: []string{"tunnelc.yaml:2: cert: "}},
		{name: "refused keys", file: "cleanup: true\nprofile: work\n", want: []string{
			`tunnelc.yaml:1: "cleanup" cannot be set in a config file`, `tunnelc.yaml:2: "profile" cannot be set in a config file`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tunnelc.yaml")
			writeFile(t, path, tc.file)
			out, err := runCmd(append([]string{"check", "--config", path}, tc.args...)...)
			out = strings.ReplaceAll(out, path, "tunnelc.yaml")
			if tc.want[0] == "ok" {
				if err != nil || out != "tunnelc.yaml: ok\n" {
					t.Fatalf("check = %v, output:\n%s", err, out)
				}
				return
			}
			if cli.ExitCode(err) != cli.ExitFailure {
				t.Errorf("check = %v (exit %d), want exit %d", err, cli.ExitCode(err), cli.ExitFailure)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, "\n"+w) && !strings.HasPrefix(out, w) {
					t.Errorf("output lacks a line %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestProfiles: --profile NAME is the config file DIR/NAME.yaml; 'tunnelc
// profiles' lists them with their servers.
func TestProfiles(t *testing.T) {
	files := testFiles(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "work.yaml"), "server: vpn.example.com:443\n"+files)
	writeFile(t, filepath.Join(dir, "home.yaml"), "server: 192.0.2.1:443\n"+files+"full-tunnel: true\n")
	writeFile(t, filepath.Join(dir, "notes.txt"), "not a profile")
	listDir := t.TempDir()
	writeFile(t, filepath.Join(listDir, "office.yaml"), "server: [vpn1.example.com:443, vpn2.example.com:443]\n"+files)
	if out, err := runCmd("profiles", "--profile-dir", listDir); err != nil || !strings.Contains(out, "\noffice   vpn1.example.com:443, vpn2.example.com:443  ") {
		t.Errorf("profiles of a server list = %v:\n%s", err, out)
	}

	out, err := runCmd("profiles", "--profile-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "PROFILE  SERVER               FILE\n" +
		"home     192.0.2.1:443        " + filepath.Join(dir, "home.yaml") + "\n" +
		"work     vpn.example.com:443  " + filepath.Join(dir, "work.yaml") + "\n"
	if out != want {
		t.Errorf("profiles:\n%s\nwant\n%s", out, want)
	}

	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"check", "--profile", "work", "--profile-dir", dir}, filepath.Join(dir, "work.yaml") + ": ok\n", cli.ExitOK},
		{[]string{"check", "--profile", "home", "--profile-dir", dir, "--kill-switch"}, filepath.Join(dir, "home.yaml") + ": ok\n", cli.ExitOK},
		{[]string{"check", "--profile", "nope", "--profile-dir", dir}, "--profile nope: no file " + filepath.Join(dir, "nope.yaml"), cli.ExitFailure},
		{[]string{"check", "--profile", "../etc/passwd", "--profile-dir", dir}, `--profile "../etc/passwd": want a name such as work`, cli.ExitUsage},
		{[]string{"check", "--profile", "work", "--config", "x.yaml"}, "--profile work and --config x.yaml: give one", cli.ExitUsage},
	} {
		out, err := runCmd(tc.args...)
		if err != nil {
			out += err.Error()
		}
		if !strings.Contains(out, tc.want) || cli.ExitCode(err) != tc.code {
			t.Errorf("tunnelc %s = %q (exit %d), want %q (exit %d)", strings.Join(tc.args, " "), out, cli.ExitCode(err), tc.want, tc.code)
		}
	}
	if out, err := runCmd("profiles", "--profile-dir", filepath.Join(dir, "missing")); err == nil {
		t.Errorf("profiles of a missing directory = %q, want an error", out)
	}
}

// TestCheckExample: the example in docs/examples is valid, with the
// certificate paths pointed at real files.
func TestCheckExample(t *testing.T) {
	files := testFiles(t)
	var args []string
	for line := range strings.Lines(files) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		args = append(args, "--"+k, v)
	}
	example := filepath.Join("..", "..", "docs", "examples", "tunnelc.yaml")
	out, err := runCmd(append([]string{"check", "--config", example}, args...)...)
	if err != nil || out != example+": ok\n" {
		t.Fatalf("check %s = %v:\n%s", example, err, out)
	}
}

// TestStartConfigErrors: tunnelc refuses to start on a bad config file,
// naming the file and line, before it connects.
func TestStartConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tunnelc.yaml")
	writeFile(t, path, "server: vpn.example.com:443\n"+testFiles(t)+"kill-switch: true\n")
	_, err := runCmd("--config", path)
	if want := path + ":5: kill-switch: needs full-tunnel"; err == nil || err.Error() != want || cli.ExitCode(err) != cli.ExitUsage {
		t.Errorf("run = %v (exit %d), want %q (exit %d)", err, cli.ExitCode(err), want, cli.ExitUsage)
	}
	if _, err := runCmd("--help"); !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("--help = %v", err)
	}
}
