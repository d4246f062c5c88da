package nftables

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// The fixtures parse the same whatever sizes the reads of the pipe have.
func TestParseAcrossReadSizes(t *testing.T) {
	d, err := dataplane.NewDraining(probetest.Addrs(t, []string{"10.244.1.3", "10.244.1.5", "10.244.1.8", "fd00:10:244:1::3"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ready.json", "terminating.json", "ipv6.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		want := parsed(t, bytes.NewReader(data), d)
		for _, r := range []struct {
			name string
			r    io.Reader
		}{
			{"one byte", iotest.OneByteReader(bytes.NewReader(data))},
			{"half", iotest.HalfReader(bytes.NewReader(data))},
			{"data with EOF", iotest.DataErrReader(bytes.NewReader(data))},
			{"compact", strings.NewReader(strings.ReplaceAll(string(data), "\n", ""))},
		} {
			if got := parsed(t, r.r, d); got != want {
				t.Errorf("%s, %s reads:\n got %s\nwant %s", name, r.name, got, want)
			}
		}
	}
}

func parsed(t *testing.T, r io.Reader, d dataplane.Draining) string {
	t.Helper()
	chains, err := parse(r, d)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(dataplane.Decide(d, chains))
}

func TestLexer(t *testing.T) {
	in := `{"a": "x\"y\\z\/\u00e9\n", "b": [1, -2.5e3, true, null, {}, []], "c": {"d": "` + strings.Repeat("long ", 30000) + `"}}`
	l := newLexer(iotest.HalfReader(strings.NewReader(in)))
	var got []string
	err := l.object(func(key []byte) error {
		switch string(key) {
		case "a":
			s, err := l.str()
			got = append(got, string(s))
			return err
		case "b":
			return l.array(func(i int) error {
				if i >= 4 {
					return l.skip()
				}
				v, err := l.scalar()
				got = append(got, string(v))
				return err
			})
		}
		found, err := l.field("d", func() error {
			s, err := l.str()
			got = append(got, fmt.Sprint(len(s)))
			return err
		})
		if !found {
			return errors.New("no d")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"x\"y\\z/é\n", "1", "-2.5e3", "true", "null", "150000"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLexerErrors(t *testing.T) {
	for _, in := range []string{``, `{`, `{"a"`, `{"a": "x`, `{"a": [1, 2`, `{"a": 1 "b": 2}`, `{"a": [1 2]}`, `{"a": }`, `{"a": "\u12"}`} {
		l := newLexer(strings.NewReader(in))
		err := l.skip()
		if err == nil || !strings.HasPrefix(err.Error(), "read nft JSON") {
			t.Errorf("%q: got %v", in, err)
		}
	}
	l := newLexer(iotest.ErrReader(errors.New("broken pipe")))
	if err := l.skip(); err == nil || err.Error() != "read nft JSON: broken pipe" {
		t.Errorf("got %v", err)
	}
}
