package certstest

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

func TestPipe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := pipe()
		// Both ends write before either reads: net.Pipe would deadlock here.
		if _, err := a.Write([]byte("hello")); err != nil {
			t.Fatalf("a.Write: %v", err)
		}
		if _, err := b.Write([]byte("world")); err != nil {
			t.Fatalf("b.Write: %v", err)
		}
		buf := make([]byte, 3)
		for _, tt := range []struct {
			c    net.Conn
			want string
		}{{b, "hel"}, {b, "lo"}, {a, "wor"}, {a, "ld"}} {
			n, err := tt.c.Read(buf)
			if err != nil || string(buf[:n]) != tt.want {
				t.Fatalf("Read = %q, %v; want %q", buf[:n], err, tt.want)
			}
		}

		// A read with nothing to read times out at the deadline.
		a.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := a.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read past deadline = %v, want os.ErrDeadlineExceeded", err)
		}
		b.Write([]byte("late"))
		if _, err := a.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read with data past deadline = %v, want os.ErrDeadlineExceeded", err)
		}
		a.SetReadDeadline(time.Time{})
		if n, err := a.Read(make([]byte, 4)); n != 4 || err != nil {
			t.Errorf("Read after clearing the deadline = %d, %v; want the 4 bytes", n, err)
		}

		// Data written before Close is still delivered, then EOF.
		b.Write([]byte("x"))
		b.Close()
		if n, err := a.Read(buf); n != 1 || err != nil {
			t.Errorf("Read after peer close = %d, %v; want the pending byte", n, err)
		}
		if _, err := a.Read(buf); err != io.EOF {
			t.Errorf("Read after peer close = %v, want io.EOF", err)
		}
		if _, err := a.Write(buf); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("Write after peer close = %v, want io.ErrClosedPipe", err)
		}
		if _, err := b.Read(buf); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after own close = %v, want net.ErrClosed", err)
		}
	})
}
