// Package control is the daemons' local control socket: a unix socket
// that answers one request per connection, and the client the tunneld and
// tunnelc commands (status, clients, reload, kick) use to reach it.
//
// The protocol is one line of JSON each way. The client sends
//
//	{"command":"kick","args":["laptop"]}
//
// and the daemon answers with
//
//	{"ok":true,"result":{...}}   or   {"ok":false,"error":"no session of client \"laptop\""}
//
// and closes the connection. Access is by file permissions: the socket is
// mode 0660, owned by the daemon's user and the operator group.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Dir is where the daemons put their sockets by default.
const Dir = "/run/tlsvpn"

// DefaultPath is the default control socket of the instance whose TUN
// interface is tun.
func DefaultPath(tun string) string { return filepath.Join(Dir, tun+".sock") }

// Request is what a client sends.
type Request struct {
	Command string   `json:"command"`
	Args    []string `json:"args,omitempty"`
}

// Response is what the daemon answers.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// maxLine bounds a request or response line (a clients list of 10,000
// sessions is about 3 MB).
const maxLine = 64 << 20

// UnreachableError says that nothing answered on the control socket:
// the daemon is not running, runs with another --control, or the caller
// may not open the socket.
type UnreachableError struct {
	Path string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the daemon on %s: %v (is it running? pick the instance with --tun NAME or --control PATH)", e.Path, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// CommandError is the daemon's refusal of a command (an unknown client,
// a file that does not parse), in its words.
type CommandError struct{ Msg string }

func (e *CommandError) Error() string { return e.Msg }

// Call sends cmd with args to the daemon on the socket at path and
// decodes the result into out (unless out is nil). A daemon that cannot
// be reached gives an *UnreachableError, a command the daemon refused a
// *CommandError.
func Call(ctx context.Context, path, cmd string, args []string, out any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return &UnreachableError{Path: path, Err: dialReason(err)}
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	line, err := json.Marshal(Request{Command: cmd, Args: args})
	if err != nil {
		return err
	}
	if _, err := c.Write(append(line, '\n')); err != nil {
		return &UnreachableError{Path: path, Err: err}
	}
	var resp Response
	if err := readLine(c, &resp); err != nil {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%s: no answer from %s in time", cmd, path)
		}
		return fmt.Errorf("%s: reading the answer from %s: %w", cmd, path, err)
	}
	if !resp.OK {
		return &CommandError{Msg: resp.Error}
	}
	if out != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, out); err != nil {
			return fmt.Errorf("%s: decoding the answer from %s: %w", cmd, path, err)
		}
	}
	return nil
}

// dialReason shortens a dial error to its cause: the path is said once,
// by UnreachableError.
func dialReason(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// readLine reads one JSON line from c into v.
func readLine(c net.Conn, v any) error {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return err
		}
		return errors.New("connection closed without an answer")
	}
	return json.Unmarshal(sc.Bytes(), v)
}
