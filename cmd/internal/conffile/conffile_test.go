package conffile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// testFlags is a FlagSet with one flag of each kind the daemons use.
type testFlags struct {
	fs         *pflag.FlagSet
	listen     string
	maxClients int
	rate       float64
	keepalive  time.Duration
	nat        bool
	routes     []string
	dns        []string
	clients    string
	config     string
}

func newTestFlags() *testFlags {
	t := &testFlags{fs: pflag.NewFlagSet("tunneld", pflag.ContinueOnError)}
	t.fs.StringVar(&t.listen, "listen", "0.0.0.0:443", "")
	t.fs.IntVar(&t.maxClients, "max-clients", 1024, "")
	t.fs.Float64Var(&t.rate, "handshake-rate", 2, "")
	t.fs.DurationVar(&t.keepalive, "keepalive", 15*time.Second, "")
	t.fs.BoolVar(&t.nat, "nat", false, "")
	t.fs.StringArrayVar(&t.routes, "route", nil, "")
	t.fs.StringSliceVar(&t.dns, "dns", []string{"100.64.0.1"}, "")
	t.fs.StringVar(&t.clients, "clients", "", "")
	t.fs.StringVar(&t.config, "config", "", "")
	return t
}

func (t *testFlags) String() string {
	return fmt.Sprintf("listen=%s max-clients=%d handshake-rate=%v keepalive=%v nat=%v route=%q dns=%q clients=%q",
		t.listen, t.maxClients, t.rate, t.keepalive, t.nat, t.routes, t.dns, t.clients)
}

var testOptions = Options{
	Refuse:   map[string]string{"config": "a config file cannot name another"},
	Sections: []string{"clients"},
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tunneld.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestApply(t *testing.T) {
	const defaults = `listen=0.0.0.0:443 max-clients=1024 handshake-rate=2 keepalive=15s nat=false route=[] dns=["100.64.0.1"] clients=""`
	for _, tc := range []struct {
		name, file string
		args       []string
		want       string
		sections   string // the Sections keys found
	}{
		{name: "empty file: defaults", file: "", want: defaults},
		{name: "comments only", file: "# nothing yet\n", want: defaults},
		{
			name: "every kind of value",
			file: "listen: 198.18.0.1:8443\nmax-clients: 2000\nhandshake-rate: 0.5\nkeepalive: 30s\nnat: true\n" +
				"route: [198.18.10.0/24, 198.18.11.0/24]\ndns: [100.64.0.53]\n",
			want: `listen=198.18.0.1:8443 max-clients=2000 handshake-rate=0.5 keepalive=30s nat=true route=["198.18.10.0/24" "198.18.11.0/24"] dns=["100.64.0.53"] clients=""`,
		},
		{
			name: "a single value for a repeatable flag",
			file: "route: 198.18.10.0/24\n",
			want: `listen=0.0.0.0:443 max-clients=1024 handshake-rate=2 keepalive=15s nat=false route=["198.18.10.0/24"] dns=["100.64.0.1"] clients=""`,
		},
		{
			name: "an empty list clears a default",
			file: "dns: []\n",
			want: `listen=0.0.0.0:443 max-clients=1024 handshake-rate=2 keepalive=15s nat=false route=[] dns=[] clients=""`,
		},
		{
			name: "the command line overrides the file",
			file: "listen: 198.18.0.1:8443\nmax-clients: 2000\nroute: [198.18.10.0/24]\n",
			args: []string{"--max-clients", "10", "--route", "198.18.99.0/24"},
			want: `listen=198.18.0.1:8443 max-clients=10 handshake-rate=2 keepalive=15s nat=false route=["198.18.99.0/24"] dns=["100.64.0.1"] clients=""`,
		},
		{
			name: "a section as a file name sets the flag",
			file: "clients: /etc/tlsvpn/clients.yaml\n",
			want: `listen=0.0.0.0:443 max-clients=1024 handshake-rate=2 keepalive=15s nat=false route=[] dns=["100.64.0.1"] clients="/etc/tlsvpn/clients.yaml"`,
		},
		{
			name:     "a section as a mapping is the caller's",
			file:     "clients:\n  laptop:\n    address: 100.64.0.10\n",
			want:     defaults,
			sections: "clients",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFlags()
			if err := f.fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			file, err := New(f.fs, writeConfig(t, tc.file), testOptions).Apply()
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := f.String(); got != tc.want {
				t.Errorf("flags after Apply:\n got %s\nwant %s", got, tc.want)
			}
			var sections []string
			for k := range file.Sections {
				sections = append(sections, k)
			}
			if got := strings.Join(sections, ","); got != tc.sections {
				t.Errorf("sections = %q, want %q", got, tc.sections)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string // each must appear in the error
	}{
		{"unknown key with a suggestion", "listen: 0.0.0.0:443\n\nmax-client: 10\n",
			[]string{`tunneld.yaml:3: unknown key "max-client" (did you mean "max-clients"?); known: clients, dns, handshake-rate, keepalive, listen, max-clients, nat, route`}},
		{"unknown key without a near one", "colour: blue\n", []string{`tunneld.yaml:1: unknown key "colour"; known: clients,`}},
		{"refused flag", "config: other.yaml\n", []string{`tunneld.yaml:1: "config" cannot be set in a config file: a config file cannot name another`}},
		{"not a number", "max-clients: lots\n", []string{`tunneld.yaml:1: max-clients: "lots": want a whole number`}},
		{"not a bool", "nat: maybe\n", []string{`tunneld.yaml:1: nat: "maybe": want true or false`}},
		{"not a duration", "keepalive: 15\n", []string{`tunneld.yaml:1: keepalive: "15": want a duration such as 15s`}},
		{"list for a single value", "listen: [a, b]\n", []string{"tunneld.yaml:1: listen: want a value, not a list"}},
		{"mapping for a value", "listen:\n  addr: x\n", []string{"tunneld.yaml:2: listen: want a value, not a mapping"}},
		{"no value", "listen:\n", []string{"tunneld.yaml:1: listen: no value"}},
		{"nested list", "route: [[a]]\n", []string{"tunneld.yaml:1: route: line 1: want a value or a list of values"}},
		{"twice", "nat: true\nnat: false\n", []string{`tunneld.yaml:2: "nat" is already set at line 1`}},
		{"not a mapping", "- listen\n", []string{"tunneld.yaml:1: want settings as"}},
		{"bad YAML", "listen: 0.0.0.0:443\n  nat: true\n", []string{"tunneld.yaml:2: "}},
		{"every problem at once", "max-client: 1\nnat: maybe\n", []string{"tunneld.yaml:1: unknown key", "tunneld.yaml:2: nat:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFlags()
			f.fs.Parse(nil)
			_, err := New(f.fs, writeConfig(t, tc.file), testOptions).Apply()
			if err == nil {
				t.Fatalf("Apply(%q) = nil, want an error", tc.file)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Apply(%q) = %q, want it to contain %q", tc.file, err, w)
				}
			}
			if strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "strconv") {
				t.Errorf("Apply(%q) = %q: mentions Go internals", tc.file, err)
			}
		})
	}
	f := newTestFlags()
	if _, err := New(f.fs, filepath.Join(t.TempDir(), "missing.yaml"), testOptions).Apply(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

// TestApplyAgain: a second Apply (a reload) starts from the defaults and
// the command line again, so removed keys return to their defaults and
// lists are replaced, not appended to.
func TestApplyAgain(t *testing.T) {
	f := newTestFlags()
	if err := f.fs.Parse([]string{"--keepalive", "5s"}); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, "max-clients: 2000\nroute: [198.18.10.0/24]\ndns: [100.64.0.53]\nkeepalive: 1m\n")
	ov := New(f.fs, path, testOptions)
	if _, err := ov.Apply(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("route: [198.18.20.0/24]\nnat: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ov.Apply(); err != nil {
		t.Fatal(err)
	}
	want := `listen=0.0.0.0:443 max-clients=1024 handshake-rate=2 keepalive=5s nat=true route=["198.18.20.0/24"] dns=["100.64.0.1"] clients=""`
	if got := f.String(); got != want {
		t.Errorf("after the second Apply:\n got %s\nwant %s", got, want)
	}
	if f.fs.Changed("max-clients") || !f.fs.Changed("nat") || !ov.CommandLine("keepalive") || ov.CommandLine("nat") {
		t.Errorf("Changed/CommandLine wrong: max-clients %v nat %v keepalive(cmdline) %v", f.fs.Changed("max-clients"), f.fs.Changed("nat"), ov.CommandLine("keepalive"))
	}
}

func TestLocate(t *testing.T) {
	f := newTestFlags()
	f.fs.Parse([]string{"--nat"})
	file, err := New(f.fs, writeConfig(t, "# a server\nlisten: nonsense\nnat: false\n"), testOptions).Apply()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{Flagf("listen", "want ADDR:PORT"), file.Path + ":2: listen: want ADDR:PORT"},
		{Flagf("nat", "from the command line"), "--nat: from the command line"}, // which overrides line 3
		{errors.New("other"), "other"},
	} {
		if got := file.Locate(tc.err); got != tc.want {
			t.Errorf("Locate(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
