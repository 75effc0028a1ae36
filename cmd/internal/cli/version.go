package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
)

// Version names a release. The release build stamps it (scripts/release.sh):
//
//	go build -ldflags "-X tlsvpn/cmd/internal/cli.Version=1.4.0" ./cmd/tunneld
//
// Left empty, --version shows the module version the go command recorded
// (a pseudo-version from the VCS, or "(devel)").
var Version string

// VersionFlag adds --version to fs. After Parse, if it is set, print
// VersionText and exit without doing anything else.
func VersionFlag(fs *pflag.FlagSet) *bool {
	return fs.Bool("version", false, "print the version, the VCS revision it was built from and the Go version, then exit")
}

// VersionText is what --version prints for the program prog: the version,
// the VCS revision, its commit time and whether the tree had uncommitted
// changes (from the build information), and the Go version and platform.
func VersionText(prog string) string {
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(prog, Version, bi)
}

// formatVersion renders --version from a stamped version and the build
// information (nil if the binary has none).
func formatVersion(prog, stamped string, bi *debug.BuildInfo) string {
	version, goVersion := "unknown", runtime.Version()
	settings := map[string]string{}
	if bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
	}
	if stamped != "" {
		version = stamped
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", prog, version)
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, "revision: %s", rev)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
		if settings["vcs.modified"] == "true" {
			b.WriteString(" with uncommitted changes")
		}
		b.WriteByte('\n')
	} else {
		b.WriteString("revision: unknown (built without VCS information)\n")
	}
	goos, goarch := runtime.GOOS, runtime.GOARCH
	if v := settings["GOOS"]; v != "" {
		goos = v
	}
	if v := settings["GOARCH"]; v != "" {
		goarch = v
	}
	fmt.Fprintf(&b, "go: %s %s/%s\n", goVersion, goos, goarch)
	return b.String()
}

// PrintVersion writes VersionText(prog) to w.
func PrintVersion(w io.Writer, prog string) error {
	_, err := io.WriteString(w, VersionText(prog))
	return err
}
