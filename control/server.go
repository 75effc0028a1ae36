package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// DefaultGroup is the operator group that gets access to the socket when
// it exists and no other group is asked for.
const DefaultGroup = "tlsvpn"

// Handler runs one command with its arguments and returns the result to
// send as JSON, or the error whose text the client shows. It must return
// when ctx ends.
type Handler func(ctx context.Context, cmd string, args []string) (any, error)

// Options configure a control socket.
type Options struct {
	// Group is the group that may use the socket (mode 0660). Empty: the
	// group DefaultGroup if it exists, else none (the socket's owner, the
	// daemon's user, only).
	Group  string
	Logger *slog.Logger
}

// Server is a listening control socket.
type Server struct {
	path string
	ln   *net.UnixListener
	log  *slog.Logger
	file os.FileInfo // the socket file we created, so Close removes only ours

	closeOnce sync.Once
	wg        sync.WaitGroup
}

// errBusy is wrapped by Listen's error when another live daemon owns the
// socket path.
var errBusy = errors.New("another instance is running")

// ListenOptional is Listen for a daemon's --control flag: path "" means no
// socket, and it returns nil, nil (a nil *Server is then never served).
func ListenOptional(path string, opts Options) (*Server, error) {
	if path == "" {
		return nil, nil
	}
	return Listen(path, opts)
}

// Listen creates the control socket at path: its directory with mode 0755
// if missing, the socket with mode 0660 and the group from opts. A socket
// file that nothing answers on (left by a daemon that crashed) is
// replaced; one that answers belongs to another running instance, and
// Listen refuses to start rather than take it over.
func Listen(path string, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gid, err := lookupGroup(opts.Group)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := clearStale(path, log); err != nil {
		return nil, err
	}
	// Bind under a temporary name, set mode and group, then link it into
	// place: no client ever sees the socket with the wrong permissions,
	// and the link fails if another daemon took the path meanwhile.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Server, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o660); err != nil {
		return fail(fmt.Errorf("control socket %s: %w", path, err))
	}
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil && opts.Group != "" {
			return fail(fmt.Errorf("control socket %s: give it to group %s: %w", path, opts.Group, err))
		} else if err != nil {
			// The default group exists but this daemon's user may not
			// hand files to it: the socket stays the user's alone.
			log.Warn("control socket: the group "+DefaultGroup+" cannot be given access; only the daemon's user can use the socket (see --control-group)", "path", path, "err", err)
		}
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(fmt.Errorf("control socket %s: %w (it started at the same time)", path, errBusy))
		}
		return fail(fmt.Errorf("control socket %s: %w", path, err))
	}
	os.Remove(tmp)
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("control socket %s: %w", path, err))
	}
	return &Server{path: path, ln: ln, log: log, file: fi}, nil
}

// lookupGroup returns the gid of name, or of DefaultGroup when name is
// empty and that group exists; -1 leaves the group alone.
func lookupGroup(name string) (int, error) {
	explicit := name != ""
	if !explicit {
		name = DefaultGroup
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		var unknown user.UnknownGroupError
		if !explicit && errors.As(err, &unknown) {
			return -1, nil
		}
		return 0, fmt.Errorf("--control-group %s: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("--control-group %s: gid %q: %w", name, g.Gid, err)
	}
	return gid, nil
}

// clearStale removes a socket file at path that nothing answers on. It
// fails when a daemon answers there, or path is something else.
func clearStale(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("control socket %s: the path exists and is not a socket; remove it or choose another --control", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control socket %s answers: %w (stop it, or give this one another --tun or --control)", path, errBusy)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket %s: remove the stale socket: %w", path, err)
	}
	log.Info("removed a stale control socket", "path", path)
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// requestTimeout bounds reading a request; handlerTimeout bounds a
// command (a reload re-reads files; a clients listing may wait for PONGs).
const (
	requestTimeout = 10 * time.Second
	handlerTimeout = time.Minute
)

// Serve answers requests with h until ctx ends or Close is called, then
// closes the socket and removes its file. Connections are handled
// concurrently; h must be safe for that.
func (s *Server) Serve(ctx context.Context, h Handler) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("control socket %s: %w", s.path, err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c, h)
		}()
	}
}

func (s *Server) handle(ctx context.Context, c net.Conn, h Handler) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	var req Request
	var resp Response
	if err := readLine(c, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		hctx, cancel := context.WithTimeout(ctx, handlerTimeout)
		result, err := s.run(hctx, h, req)
		cancel()
		if err != nil {
			resp.Error = err.Error()
		} else if resp.Result, err = json.Marshal(result); err != nil {
			resp.Error = "encoding the result: " + err.Error()
		} else {
			resp.OK = true
		}
		s.log.Debug("control command", "command", req.Command, "args", req.Args, "ok", resp.OK)
	}
	line, err := json.Marshal(resp)
	if err != nil {
		return
	}
	c.SetWriteDeadline(time.Now().Add(requestTimeout))
	c.Write(append(line, '\n'))
}

// run calls h, turning a panic into an error: a bug in one command must
// not take the daemon down.
func (s *Server) run(ctx context.Context, h Handler, req Request) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("control command panicked", "command", req.Command, "panic", r)
			err = fmt.Errorf("internal error in %s", req.Command)
		}
	}()
	return h(ctx, req.Command, req.Args)
}

// Close stops accepting and removes the socket file, unless another
// daemon has replaced it since. Safe to call more than once, and on a
// nil *Server (no socket).
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	var err error
	s.closeOnce.Do(func() {
		err = s.ln.Close()
		if fi, serr := os.Lstat(s.path); serr == nil && os.SameFile(fi, s.file) {
			os.Remove(s.path)
		}
	})
	return err
}
