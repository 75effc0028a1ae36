package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"tlsvpn/control"
)

// ControlFlags are a daemon's control socket flags.
type ControlFlags struct {
	Path  string // --control; see Socket
	Group string // --control-group
	fs    *pflag.FlagSet
}

// AddControlFlags registers --control and --control-group on fs.
func AddControlFlags(fs *pflag.FlagSet, c *ControlFlags, prog string) {
	c.fs = fs
	fs.StringVar(&c.Path, "control", "", "unix socket PATH for '"+prog+" status' and the other control commands (default /run/tlsvpn/<tun>.sock; \"\" turns it off)")
	fs.StringVar(&c.Group, "control-group", "", "group that may use the control socket (mode 0660); default: the group "+control.DefaultGroup+" if it exists, else only the daemon's user (root)")
}

// Socket returns the control socket path for the instance whose TUN is
// tun: --control when given ("" for none), else the default.
func (c *ControlFlags) Socket(tun string) string {
	if c.fs != nil && c.fs.Changed("control") {
		return c.Path
	}
	return control.DefaultPath(tun)
}

// ControlCommand describes one command that talks to a daemon over its
// control socket (tunneld status, tunnelc status, ...).
type ControlCommand struct {
	Prog, Name string // "tunneld", "kick"
	Args       string // positional arguments for the usage line, e.g. "NAME"
	NArgs      int    // how many positional arguments it takes
	// ArgsOptional makes NArgs the most it takes: fewer are fine (Args
	// then shows them in brackets, e.g. "[SERVER]").
	ArgsOptional bool
	Help         string // what it does, and what its output means
	Example      string // example output, shown in --help
	DefaultTun   string
	// ProfileDir, when set, adds --profile NAME (the config file
	// NAME.yaml in ProfileDir, or in --profile-dir) beside --config.
	ProfileDir string
	// Render writes the human form of the daemon's result (raw JSON); nil
	// prints the result's "message" field.
	Render func(w io.Writer, raw json.RawMessage, now time.Time) error
	// Switches are the command's own boolean flags (e.g. tunneld clients
	// --fleet).
	Switches []ControlSwitch
}

// ControlSwitch is a boolean flag of a control command: when given,
// "--NAME" is sent to the daemon before the positional arguments, and its
// Render (if not nil) renders the answer instead of the command's.
type ControlSwitch struct {
	Name, Usage string
	Render      func(w io.Writer, raw json.RawMessage, now time.Time) error
}

// RunControl runs c with the command line args: it picks the instance
// (--tun or --control), sends the command and prints the answer as a
// table or, with --json, as JSON. Errors: *UsageError for the command
// line, *control.UnreachableError when the daemon does not answer,
// *control.CommandError when it refused.
func RunControl(ctx context.Context, c ControlCommand, args []string, stdout, stderr io.Writer) error {
	name := c.Prog + " " + c.Name
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	tun := fs.String("tun", c.DefaultTun, "TUN interface name of the instance to ask; its socket is /run/tlsvpn/NAME.sock")
	path := fs.String("control", "", "control socket PATH of the instance, as given to its --control (overrides --tun)")
	config := fs.String("config", "", "the instance's config FILE: its control and tun settings name the socket (as the daemon started with it would)")
	var profile, profileDir *string
	choose := "--tun NAME | --control PATH | --config FILE"
	if c.ProfileDir != "" {
		profile = fs.String("profile", "", "the instance started with --profile NAME: its config file NAME.yaml in --profile-dir names the socket")
		profileDir = fs.String("profile-dir", c.ProfileDir, "directory of the profiles (NAME.yaml each)")
		choose += " | --profile NAME"
	}
	switches := make([]*bool, len(c.Switches))
	for i, sw := range c.Switches {
		switches[i] = fs.Bool(sw.Name, false, sw.Usage)
	}
	asJSON := fs.Bool("json", false, "print the daemon's answer as JSON")
	timeout := fs.Duration("timeout", 70*time.Second, "give up waiting for the answer after this long")
	fs.Usage = func() {
		usage := name
		if c.Args != "" {
			usage += " " + c.Args
		}
		fmt.Fprintf(stdout, "Usage: %s [%s] [--json]\n\n%s\n\nFlags:\n", usage, choose, c.Help)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		if c.Example != "" {
			fmt.Fprintf(stdout, "\nExample:\n%s", c.Example)
		}
		fmt.Fprintf(stdout, "\nExit status: 0 done, 1 the daemon refused or the command failed, 2 bad usage, 3 the daemon could not be reached.\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return &UsageError{Err: fmt.Errorf("%w (see '%s --help')", err, name)}
	}
	if fs.NArg() != c.NArgs && !(c.ArgsOptional && fs.NArg() < c.NArgs) {
		if c.NArgs == 0 || c.ArgsOptional {
			return Usagef("unexpected argument %q (see '%s --help')", fs.Arg(c.NArgs), name)
		}
		return Usagef("want %s (see '%s --help')", c.Args, name)
	}
	file := *config
	if profile != nil && *profile != "" {
		if file != "" {
			return Usagef("--profile %s and --config %s: give one", *profile, file)
		}
		if strings.ContainsRune(*profile, '/') || strings.HasSuffix(*profile, ".yaml") {
			return Usagef("--profile %q: want a name such as work, the file %s/work.yaml", *profile, *profileDir)
		}
		file = filepath.Join(*profileDir, *profile+".yaml")
	}
	socket := control.DefaultPath(*tun)
	if file != "" {
		if fs.Changed("tun") || fs.Changed("control") {
			return Usagef("give the instance once: --config or --profile, or --tun or --control")
		}
		var err error
		if socket, err = socketOf(file, c.DefaultTun); err != nil {
			return err
		}
	}
	if fs.Changed("control") {
		if *path == "" {
			return Usagef("--control: want the socket PATH")
		}
		socket = *path
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var sent []string
	for i, on := range switches {
		if *on {
			sent = append(sent, "--"+c.Switches[i].Name)
			if c.Switches[i].Render != nil {
				c.Render = c.Switches[i].Render
			}
		}
	}
	var raw json.RawMessage
	if err := control.Call(ctx, socket, c.Name, append(sent, fs.Args()...), &raw); err != nil {
		return err
	}
	if *asJSON {
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return err
		}
		out.WriteByte('\n')
		_, err := stdout.Write(out.Bytes())
		return err
	}
	if c.Render != nil {
		return c.Render(stdout, raw, time.Now())
	}
	var msg struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, msg.Message)
	return err
}

// Message is the result of a control command that only reports what it
// did (reload, kick).
type Message struct {
	Message string `json:"message"`
}

// socketOf returns the control socket of the instance that runs with the
// config file path: its control setting, or the default socket of its tun
// setting (defaultTun when it has none). The daemon checks the rest of the
// file; only these two keys matter here.
func socketOf(path, defaultTun string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var keys struct {
		Tun     *string `yaml:"tun"`
		Control *string `yaml:"control"`
	}
	if err := yaml.Unmarshal(b, &keys); err != nil {
		return "", fmt.Errorf("%s: %v", path, err)
	}
	switch {
	case keys.Control != nil && *keys.Control == "":
		return "", fmt.Errorf("%s: control is \"\": that instance has no control socket", path)
	case keys.Control != nil:
		return *keys.Control, nil
	case keys.Tun != nil && *keys.Tun != "":
		return control.DefaultPath(*keys.Tun), nil
	}
	return control.DefaultPath(defaultTun), nil
}
