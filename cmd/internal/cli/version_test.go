package cli

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestFormatVersion(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "tlsvpn", Version: "v0.0.0-20261205094300-50b44c2d1e0f+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "GOOS", Value: "linux"},
			{Key: "GOARCH", Value: "arm64"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "50b44c2d1e0f3c5b1a6c1d2e3f405162738495a6"},
			{Key: "vcs.time", Value: "2026-12-05T09:43:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		name, stamped string
		bi            *debug.BuildInfo
		want          string
	}{
		{"vcs build", "", bi,
			"tunneld v0.0.0-20261205094300-50b44c2d1e0f+dirty\n" +
				"revision: 50b44c2d1e0f3c5b1a6c1d2e3f405162738495a6 (2026-12-05T09:43:00Z) with uncommitted changes\n" +
				"go: go1.26.8 linux/arm64\n"},
		{"release stamp wins", "1.4.0", bi,
			"tunneld 1.4.0\n" +
				"revision: 50b44c2d1e0f3c5b1a6c1d2e3f405162738495a6 (2026-12-05T09:43:00Z) with uncommitted changes\n" +
				"go: go1.26.8 linux/arm64\n"},
		{"clean tree", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"},
				{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}},
			"tunneld (devel)\nrevision: abc\ngo: go1.26.8 linux/amd64\n"},
		{"no build info", "", nil,
			"tunneld unknown\nrevision: unknown (built without VCS information)\ngo: " +
				runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatVersion("tunneld", tc.stamped, tc.bi); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// The binary's own build information (a test binary has some) reaches
// the text: the Go version that built it, always.
func TestVersionTextOfThisBinary(t *testing.T) {
	got := VersionText("tunnelc")
	if !strings.HasPrefix(got, "tunnelc ") || !strings.Contains(got, "go: "+runtime.Version()) {
		t.Errorf("VersionText = %q", got)
	}
}

func TestVersionFlag(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	v := VersionFlag(fs)
	if err := fs.Parse([]string{"--version"}); err != nil || !*v {
		t.Fatalf("Parse(--version): %v, set %v", err, *v)
	}
}
