package tunnel

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseHeader(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Header
		err  error
	}{
		{"data", []byte{0x01, 0, 0x05, 0xdc}, Header{Type: TypeData, Len: 1500}, nil},
		{"data end", []byte{0x81, 0, 0, 20}, Header{Type: TypeData, End: true, Len: 20}, nil},
		{"data max", []byte{0x01, 0, 0xff, 0xff}, Header{Type: TypeData, Len: 65535}, nil},
		{"data too large", []byte{0x01, 0x01, 0, 0}, Header{}, ErrFrameTooLarge},
		{"data 2^24-1", []byte{0x01, 0xff, 0xff, 0xff}, Header{}, ErrFrameTooLarge},
		{"data too small", []byte{0x01, 0, 0, 19}, Header{}, ErrFrameTooSmall},
		{"data empty", []byte{0x01, 0, 0, 0}, Header{}, ErrFrameTooSmall},
		{"gso max", []byte{0x02, 0x01, 0x00, 0x07}, Header{Type: TypeDataGSO, Len: 65543}, nil},
		{"gso too large", []byte{0x02, 0x01, 0x00, 0x08}, Header{}, ErrFrameTooLarge},
		{"ping", []byte{0x12, 0, 0, 8}, Header{Type: TypePing, Len: 8}, nil},
		{"ping wrong size", []byte{0x12, 0, 0, 9}, Header{}, ErrFrameTooLarge},
		{"config too large", []byte{0x11, 0, 0x40, 0x01}, Header{}, ErrFrameTooLarge},
		{"unknown", []byte{0x7f, 0, 0, 1}, Header{}, ErrUnknownType},
		{"zero type", []byte{0x00, 0, 0, 1}, Header{}, ErrUnknownType},
		{"short", []byte{0x01, 0, 0}, Header{}, ErrShortHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHeader(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseHeader(%x) error = %v, want %v", tt.in, err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("ParseHeader(%x) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestAppendFrameRoundTrip(t *testing.T) {
	payload := bytes.Repeat([]byte{0x45}, 100)
	b := AppendFrame(nil, TypeData, true, payload)
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Type != TypeData || !h.End || h.Len != 100 || !bytes.Equal(b[HeaderLen:], payload) {
		t.Fatalf("round trip: header %v payload %x", h, b[HeaderLen:])
	}
}

func TestGSORoundTrip(t *testing.T) {
	g := GSO{Type: 1, Flags: 1, Size: 1448, CsumStart: 20, CsumOffset: 16}
	var b [GSOMetaLen]byte
	PutGSO(b[:], g)
	got, err := ParseGSO(b[:])
	if err != nil || got != g {
		t.Fatalf("ParseGSO(PutGSO(%v)) = %v, %v", g, got, err)
	}
	if _, err := ParseGSO(b[:7]); err == nil {
		t.Fatal("ParseGSO of 7 bytes: no error")
	}
}

// TestFrameCodecAllocs pins zero allocations for encoding and decoding a
// frame header, which happens once per packet.
func TestFrameCodecAllocs(t *testing.T) {
	buf := make([]byte, 2048)
	allocs := testing.AllocsPerRun(1000, func() {
		PutHeader(buf, TypeData, true, 1400)
		if _, err := ParseHeader(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("frame encode+decode: %v allocs per run, want 0", allocs)
	}
}

func BenchmarkFrameEncodeDecode(b *testing.B) {
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(1400)
	for b.Loop() {
		PutHeader(buf, TypeData, false, 1400)
		if _, err := ParseHeader(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(AppendFrame(nil, TypeData, true, make([]byte, 20)))
	f.Add(AppendFrame(nil, TypePing, false, make([]byte, 8)))
	f.Add(AppendFrame(nil, TypeClose, false, MarshalClose(CloseProtocol, "bad")))
	f.Add([]byte{0x02, 0x01, 0x00, 0x07})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		lo, hi, ok := limits(h.Type)
		if !ok || h.Len < lo || h.Len > hi {
			t.Fatalf("ParseHeader(%x) = %v accepted out-of-limit frame", b, h)
		}
		var out [HeaderLen]byte
		PutHeader(out[:], h.Type, h.End, h.Len)
		if !bytes.Equal(out[:], b[:HeaderLen]) {
			t.Fatalf("PutHeader(ParseHeader(%x)) = %x", b[:HeaderLen], out)
		}
	})
}

// TestControlFramesSetEnd: every control frame carries E (PROTOCOL.md
// section 2). appendControl sets it, and the package's code frames
// control messages only through it: no other call of AppendFrame, and
// PutHeader only for DATA and DATA_GSO.
func TestControlFramesSetEnd(t *testing.T) {
	for _, typ := range []byte{TypeHello, TypeConfig, TypePing, TypePong, TypeClose} {
		h, err := ParseHeader(appendControl(nil, typ, make([]byte, PingLen)))
		if err != nil || !h.End || h.Type != typ {
			t.Errorf("appendControl(%s) parses as %v, %v; want E set", typeName(typ), h, err)
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil || fn.Recv == nil && (fn.Name.Name == "appendControl" || fn.Name.Name == "AppendFrame") {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				id, ok := call.Fun.(*ast.Ident)
				if !ok {
					return true
				}
				switch id.Name {
				case "AppendFrame":
					t.Errorf("%s: %s calls AppendFrame; frame control messages with appendControl (E set)", fset.Position(call.Pos()), fn.Name.Name)
				case "PutHeader":
					if typ, ok := call.Args[1].(*ast.Ident); !ok || typ.Name != "TypeData" && typ.Name != "TypeDataGSO" {
						t.Errorf("%s: %s calls PutHeader for a frame that is not DATA or DATA_GSO; frame control messages with appendControl (E set)", fset.Position(call.Pos()), fn.Name.Name)
					}
				}
				return true
			})
		}
	}
}
