package grpcgraceful

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
)

// frames writes HTTP/2 frames as a server would.
func frames(t *testing.T, write func(fr *http2.Framer) error) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := write(http2.NewFramer(&b, nil)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestFrameScannerSeesTheGOAWAY(t *testing.T) {
	settings := frames(t, func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
	})
	data := frames(t, func(fr *http2.Framer) error {
		return fr.WriteData(1, false, bytes.Repeat([]byte{byte(http2.FrameGoAway)}, 300))
	})
	ping := frames(t, func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{7, 7, 7, 7, 7, 7, 7, 7}) })
	goAway := frames(t, func(fr *http2.Framer) error { return fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil) })
	stream := bytes.Join([][]byte{settings, data, ping, goAway}, nil)
	goAwayEnd := len(settings) + len(data) + len(ping) + 9 // its header is enough

	tests := []struct {
		name   string
		stream []byte
		chunk  int
		wantAt int // byte count after which feed reports true; -1: never
	}{
		{"one write", stream, len(stream), len(stream)},
		{"byte by byte", stream, 1, goAwayEnd},
		{"seven bytes at a time", stream, 7, goAwayEnd + (7-goAwayEnd%7)%7},
		{"no GOAWAY", bytes.Join([][]byte{settings, data, ping}, nil), 5, -1},
		{"TLS records", []byte{0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0, 0, 0, 0, 0}, 3, 9},
		{"not SETTINGS first", append(append([]byte(nil), ping...), goAway...), 1, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f frameScanner
			got := -1
			for off := 0; off < len(tt.stream); off += tt.chunk {
				end := min(off+tt.chunk, len(tt.stream))
				if f.feed(tt.stream[off:end]) {
					if got != -1 {
						t.Fatalf("reported twice, at %d and %d", got, end)
					}
					got = end
				}
				if f.state == scanDone && f.feed([]byte{0, 0, 0}) {
					t.Fatal("reported after done")
				}
			}
			if got != tt.wantAt {
				t.Errorf("reported after %d bytes, want %d", got, tt.wantAt)
			}
		})
	}
}
