// Package conffile reads a daemon's YAML config file onto its command-line
// flags: each key is a long flag name with the same meaning (listen:
// 0.0.0.0:443, max-clients: 2000, route: [198.18.10.0/24] for a repeatable
// flag, keepalive: 15s, nat: true), so the file and the flags can never
// drift apart. A flag given on the command line overrides the file.
//
// Unknown keys, values of the wrong type and flags that make no sense in a
// file are refused with the file, the line and what is expected, never a
// Go type name: a typo must not silently leave a setting at its default.
package conffile

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Options says how a file maps onto a FlagSet.
type Options struct {
	// Refuse names flags that may not be set in a file, each with the
	// reason shown to the user (e.g. "config": "a config file cannot
	// name another").
	Refuse map[string]string
	// Sections names keys whose value may be a mapping that the caller
	// parses itself (File.Sections), e.g. tunneld's clients policy. If
	// such a key is also a flag, a scalar value sets the flag as usual.
	Sections []string
}

// File is a config file that was applied to a FlagSet.
type File struct {
	Path string
	// Lines is the line of each key in the file.
	Lines map[string]int
	// Sections holds the mapping values of Options.Sections keys.
	Sections map[string]*yaml.Node

	cmdline map[string]bool // flags the command line set: the file's value is not used
}

// Line returns where key is set, as "path:line", or "" if the file does
// not set it, the command line overrode it, or f is nil.
func (f *File) Line(key string) string {
	if f == nil || f.Lines[key] == 0 || f.cmdline[key] {
		return ""
	}
	return fmt.Sprintf("%s:%d", f.Path, f.Lines[key])
}

// FlagError is a problem with one flag's value, found after the flags were
// parsed and the file applied; Locate says where that value came from.
type FlagError struct {
	Flag string
	Err  error
}

func (e *FlagError) Error() string { return "--" + e.Flag + ": " + e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// Flagf returns a *FlagError for flag.
func Flagf(flag, format string, args ...any) error {
	return &FlagError{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// Locate renders err for the user: a *FlagError whose flag the file set
// (and the command line did not) as "path:line: key: ...", anything else
// as it is.
func (f *File) Locate(err error) string {
	var fe *FlagError
	if errors.As(err, &fe) {
		if where := f.Line(fe.Flag); where != "" {
			return where + ": " + fe.Flag + ": " + fe.Err.Error()
		}
	}
	return err.Error()
}

// Overlay applies one config file to a FlagSet after its command line was
// parsed, and can apply it again later (a reload) with the command line
// still taking precedence.
type Overlay struct {
	fs      *pflag.FlagSet
	path    string
	opts    Options
	cmdline map[string]bool // flags the command line set
}

// New returns an Overlay of the file at path onto fs. Call it after
// fs.Parse: the flags set by then are the command line's and keep their
// values.
func New(fs *pflag.FlagSet, path string, opts Options) *Overlay {
	o := &Overlay{fs: fs, path: path, opts: opts, cmdline: map[string]bool{}}
	fs.Visit(func(f *pflag.Flag) { o.cmdline[f.Name] = true })
	return o
}

// CommandLine reports whether the command line set flag.
func (o *Overlay) CommandLine(flag string) bool { return o.cmdline[flag] }

// Apply reads the file and sets every flag it names that the command line
// did not. Every other flag is first reset to its default, so a key
// removed from the file since the last Apply goes back to the default. It
// returns every problem found, each as "path:line: ...", joined; the
// FlagSet's values are then undefined (apply again, or exit).
func (o *Overlay) Apply() (*File, error) {
	b, err := os.ReadFile(o.path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var errs []error
	o.fs.VisitAll(func(f *pflag.Flag) {
		if o.cmdline[f.Name] || !f.Changed {
			return
		}
		if err := reset(f); err != nil {
			errs = append(errs, fmt.Errorf("config: resetting --%s to its default: %w", f.Name, err))
		}
	})
	file, perrs := o.apply(b)
	return file, errors.Join(append(errs, perrs...)...)
}

// reset puts f back to its default value, as if never set.
func reset(f *pflag.Flag) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		if err := sv.Replace(nil); err != nil {
			return err
		}
		if f.DefValue != "[]" {
			if err := sv.Replace(splitDefault(f.DefValue)); err != nil {
				return err
			}
		}
	} else if err := f.Value.Set(f.DefValue); err != nil {
		return err
	}
	f.Changed = false
	return nil
}

// splitDefault turns a slice flag's DefValue ("[a,b]") back into values.
func splitDefault(s string) []string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// apply parses b and sets the flags; it collects every problem.
func (o *Overlay) apply(b []byte) (*File, []error) {
	file := &File{Path: o.path, Lines: map[string]int{}, Sections: map[string]*yaml.Node{}, cmdline: o.cmdline}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		msg := err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			msg = strings.TrimPrefix(msg, m[0])
			if m[1] != "" {
				return file, []error{fmt.Errorf("%s:%s: %s", o.path, m[1], msg)}
			}
		}
		return file, []error{fmt.Errorf("%s: %s", o.path, msg)}
	}
	if len(doc.Content) == 0 {
		return file, nil // empty file: every default
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return file, []error{fmt.Errorf("%s:%d: want settings as \"key: value\" lines (a mapping), e.g. \"listen: 0.0.0.0:443\"", o.path, root.Line)}
	}
	var errs []error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", o.path, line, fmt.Sprintf(format, args...)))
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			fail(k.Line, "a key must be a flag name such as listen")
			continue
		}
		if prev, ok := file.Lines[key]; ok {
			fail(k.Line, "%q is already set at line %d", key, prev)
			continue
		}
		file.Lines[key] = k.Line
		if why, ok := o.opts.Refuse[key]; ok {
			fail(k.Line, "%q cannot be set in a config file: %s", key, why)
			continue
		}
		section := slices.Contains(o.opts.Sections, key)
		f := o.fs.Lookup(key)
		if f == nil && !section {
			fail(k.Line, "unknown key %q%s; known: %s", key, o.suggest(key), strings.Join(o.known(), ", "))
			continue
		}
		if section && (v.Kind == yaml.MappingNode || f == nil) {
			file.Sections[key] = v
			continue
		}
		if o.cmdline[key] {
			continue // the command line wins
		}
		if err := set(f, v); err != nil {
			fail(v.Line, "%s: %v", key, err)
		}
	}
	return file, errs
}

// set sets flag f from YAML value v.
func set(f *pflag.Flag, v *yaml.Node) error {
	want := describe(f.Value.Type())
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	sv, isSlice := f.Value.(pflag.SliceValue)
	var vals []string
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		return fmt.Errorf("no value; want %s (remove the line to keep the default)", want)
	case v.Kind == yaml.ScalarNode:
		vals = []string{v.Value}
	case v.Kind == yaml.SequenceNode && isSlice:
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return fmt.Errorf("line %d: want %s", item.Line, want)
			}
			vals = append(vals, item.Value)
		}
	case v.Kind == yaml.SequenceNode:
		return fmt.Errorf("want %s, not a list", want)
	default:
		return fmt.Errorf("want %s, not a mapping", want)
	}
	if isSlice {
		if err := sv.Replace(vals); err != nil {
			return fmt.Errorf("%q: want %s", strings.Join(vals, ","), want)
		}
		f.Changed = true
		return nil
	}
	if err := f.Value.Set(vals[0]); err != nil {
		return fmt.Errorf("%q: want %s", vals[0], want)
	}
	f.Changed = true
	return nil
}

// describe says in words what a flag of pflag type typ takes.
func describe(typ string) string {
	switch typ {
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64":
		return "a whole number"
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "a whole number, 0 or more"
	case "float32", "float64":
		return "a number"
	case "duration":
		return "a duration such as 15s, 2m or 1h"
	case "stringArray", "stringSlice":
		return "a value or a list of values such as [a, b]"
	case "intSlice", "int64Slice", "uintSlice":
		return "a whole number or a list of them"
	}
	return "a value"
}

// known returns the keys a file may set, sorted.
func (o *Overlay) known() []string {
	var keys []string
	o.fs.VisitAll(func(f *pflag.Flag) {
		if _, refused := o.opts.Refuse[f.Name]; !refused && !f.Hidden {
			keys = append(keys, f.Name)
		}
	})
	for _, s := range o.opts.Sections {
		if !slices.Contains(keys, s) {
			keys = append(keys, s)
		}
	}
	slices.Sort(keys)
	return keys
}

// suggest returns ` (did you mean "x"?)` for the closest known key, if
// one is close enough to be a typo.
func (o *Overlay) suggest(key string) string {
	best, bestD := "", 3 // at most two edits
	for _, k := range o.known() {
		if d := distance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + strconv.Quote(best) + "?)"
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
