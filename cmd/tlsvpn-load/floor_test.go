package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"tlsvpn/certs"
)

// TestFloor runs the floor server and each floor client for a moment on
// loopback and checks that they did the work they report: every idle
// connection's messages answered, full and resumed handshakes completed
// with the CPU figures read from /proc.
func TestFloor(t *testing.T) {
	pki := t.TempDir()
	if _, err := certs.InitCA(pki, certs.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid()) // the server runs in this process
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			addr := freePort(t)
			ctx, cancel := context.WithCancel(context.Background())
			srvArgs := []string{"server", "--listen", addr, "--pki", pki}
			if plain {
				srvArgs = append(srvArgs, "--plain")
			}
			var srvErr bytes.Buffer
			done := make(chan error, 1)
			go func() { done <- runFloor(ctx, srvArgs, &srvErr, &srvErr) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("floor server: %v (%s)", err, srvErr.String())
				}
			}()
			waitListening(t, addr)

			idle := []string{"idle", "--server", addr, "--pki", pki, "--server-pid", pid,
				"--conns", "20", "--every", "100ms", "--settle", "100ms", "--window", "1s"}
			if plain {
				idle = append(idle, "--plain")
			}
			var out bytes.Buffer
			if err := runFloor(context.Background(), idle, &out, &out); err != nil {
				t.Fatalf("floor idle: %v\n%s", err, out.String())
			}
			// 20 connections, one message every 100 ms each, for 1 s:
			// about 200, none lost.
			m := regexp.MustCompile(`conns=20 .*messages=(\d+) .*lost=0\n.*server_cpu_pct=([0-9.]+)`).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("floor idle report:\n%s", out.String())
			}
			if n, _ := strconv.Atoi(m[1]); n < 100 {
				t.Errorf("floor idle: %d messages answered in 1 s of 20 connections at 10/s each, want about 200\n%s", n, out.String())
			}
			if plain {
				return
			}
			for _, resume := range []bool{false, true} {
				hs := []string{"handshake", "--server", addr, "--pki", pki, "--server-pid", pid,
					"--identities", "4", "--concurrency", "4", "--settle", "200ms", "--window", "1s"}
				if resume {
					hs = append(hs, "--resume")
				} else {
					hs = append(hs, "--rate", "50")
				}
				out.Reset()
				if err := runFloor(context.Background(), hs, &out, &out); err != nil {
					t.Fatalf("floor handshake: %v\n%s", err, out.String())
				}
				m := regexp.MustCompile(`ok=(\d+) resumed=(\d+) failed=0 .*\n.*server_ms_per_handshake=([0-9.]+)`).FindStringSubmatch(out.String())
				if m == nil {
					t.Fatalf("floor handshake report:\n%s", out.String())
				}
				ok, _ := strconv.Atoi(m[1])
				res, _ := strconv.Atoi(m[2])
				if ok < 10 || (resume && res != ok) || (!resume && res != 0) {
					t.Errorf("floor handshake resume=%v: %d ok, %d resumed\n%s", resume, ok, res, out.String())
				}
				if ms, _ := strconv.ParseFloat(m[3], 64); ms <= 0 {
					t.Errorf("floor handshake: no server CPU per handshake measured\n%s", out.String())
				}
			}
		})
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("floor server not listening on %s", addr)
}
