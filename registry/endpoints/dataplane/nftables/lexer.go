package nftables

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// lexer reads JSON from a stream one token at a time, without building values: the probe walks
// nft's output and keeps a few strings of it. encoding/json decoded the same 50,000-endpoint
// table fifteen times slower, with 860,000 allocations.
//
// Slices it returns point into its buffer and are valid until the next call.
type lexer struct {
	r        io.Reader
	buf      []byte
	pos, end int
	err      error // of r, once reached
	scratch  []byte
	key      []byte
	offset   int64 // of buf[0] in the stream, for errors
}

func newLexer(r io.Reader) *lexer {
	return &lexer{r: r, buf: make([]byte, 64<<10)}
}

// fill reads more input, keeping buf[keep:end]; it returns false at the end of input.
func (l *lexer) fill(keep int) bool {
	if l.err != nil {
		return false
	}
	n := copy(l.buf, l.buf[keep:l.end])
	l.offset += int64(keep)
	l.pos -= keep
	l.end = n
	if l.end == len(l.buf) {
		l.buf = append(l.buf, make([]byte, len(l.buf))...)
	}
	for {
		m, err := l.r.Read(l.buf[l.end:])
		l.end += m
		if err != nil {
			l.err = err
			return m > 0
		}
		if m > 0 {
			return true
		}
	}
}

func (l *lexer) errorf(format string, args ...any) error {
	if l.err != nil && !errors.Is(l.err, io.EOF) {
		return fmt.Errorf("read nft JSON: %w", l.err)
	}
	return fmt.Errorf("read nft JSON at byte %d: %s", l.offset+int64(l.pos), fmt.Sprintf(format, args...))
}

// peek returns the next byte that is not white space, without consuming it.
func (l *lexer) peek() (byte, error) {
	for {
		for l.pos < l.end {
			switch c := l.buf[l.pos]; c {
			case ' ', '\t', '\n', '\r':
				l.pos++
			default:
				return c, nil
			}
		}
		if !l.fill(l.pos) {
			return 0, l.errorf("unexpected end of input")
		}
	}
}

func (l *lexer) expect(want byte) error {
	c, err := l.peek()
	if err != nil {
		return err
	}
	if c != want {
		return l.errorf("got %q, want %q", c, want)
	}
	l.pos++
	return nil
}

// str reads a string.
func (l *lexer) str() ([]byte, error) {
	if err := l.expect('"'); err != nil {
		return nil, err
	}
	start := l.pos
	for {
		for i := l.pos; i < l.end; i++ {
			switch l.buf[i] {
			case '"':
				l.pos = i + 1
				return l.buf[start:i], nil
			case '\\':
				l.pos = i
				return l.escaped(start)
			}
		}
		l.pos = l.end
		if !l.fill(start) {
			return nil, l.errorf("unterminated string")
		}
		start = 0
	}
}

// escaped finishes a string that has escapes, from buf[start:pos] on, into scratch.
func (l *lexer) escaped(start int) ([]byte, error) {
	l.scratch = append(l.scratch[:0], l.buf[start:l.pos]...)
	for {
		c, ok := l.byte()
		if !ok {
			return nil, l.errorf("unterminated string")
		}
		switch c {
		case '"':
			return l.scratch, nil
		case '\\':
			e, ok := l.byte()
			if !ok {
				return nil, l.errorf("unterminated string")
			}
			switch e {
			case 'n':
				l.scratch = append(l.scratch, '\n')
			case 't':
				l.scratch = append(l.scratch, '\t')
			case 'r':
				l.scratch = append(l.scratch, '\r')
			case 'b':
				l.scratch = append(l.scratch, '\b')
			case 'f':
				l.scratch = append(l.scratch, '\f')
			case 'u':
				var hex [4]byte
				for i := range hex {
					if hex[i], ok = l.byte(); !ok {
						return nil, l.errorf("unterminated string")
					}
				}
				r, err := strconv.ParseUint(string(hex[:]), 16, 16)
				if err != nil {
					return nil, l.errorf("bad escape \\u%s", hex[:])
				}
				l.scratch = utf8.AppendRune(l.scratch, rune(r))
			default: // '"', '\\', '/'
				l.scratch = append(l.scratch, e)
			}
		default:
			l.scratch = append(l.scratch, c)
		}
	}
}

func (l *lexer) byte() (byte, bool) {
	if l.pos == l.end && !l.fill(l.pos) {
		return 0, false
	}
	c := l.buf[l.pos]
	l.pos++
	return c, true
}

// scalar reads a number, true, false or null as its text.
func (l *lexer) scalar() ([]byte, error) {
	if _, err := l.peek(); err != nil {
		return nil, err
	}
	start := l.pos
	for {
		for i := l.pos; i < l.end; i++ {
			switch c := l.buf[i]; {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c == '-', c == '+', c == '.', c == 'E':
			default:
				l.pos = i
				if i == start {
					return nil, l.errorf("unexpected %q", c)
				}
				return l.buf[start:i], nil
			}
		}
		l.pos = l.end
		if !l.fill(start) {
			if l.pos > 0 && l.err != nil && errors.Is(l.err, io.EOF) {
				return l.buf[:l.pos], nil
			}
			return nil, l.errorf("unexpected end of input")
		}
		start = 0
	}
}

// object reads an object, calling field for each key; field must consume the value. The key is
// valid until the value is read.
func (l *lexer) object(field func(key []byte) error) error {
	if err := l.expect('{'); err != nil {
		return err
	}
	if c, err := l.peek(); err != nil {
		return err
	} else if c == '}' {
		l.pos++
		return nil
	}
	for {
		s, err := l.str()
		if err != nil {
			return err
		}
		// Copied: reading on may move the buffer under s.
		l.key = append(l.key[:0], s...)
		key := l.key
		if err := l.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		c, err := l.peek()
		if err != nil {
			return err
		}
		l.pos++
		switch c {
		case ',':
		case '}':
			return nil
		default:
			return l.errorf("got %q in an object", c)
		}
	}
}

// field reads an object and calls value for the key name, which must consume the value; the
// other keys are skipped. found tells whether the key was there.
func (l *lexer) field(name string, value func() error) (found bool, err error) {
	err = l.object(func(key []byte) error {
		if string(key) != name {
			return l.skip()
		}
		found = true
		return value()
	})
	return found, err
}

// array reads an array, calling elem for each element; elem must consume it.
func (l *lexer) array(elem func(i int) error) error {
	if err := l.expect('['); err != nil {
		return err
	}
	if c, err := l.peek(); err != nil {
		return err
	} else if c == ']' {
		l.pos++
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		c, err := l.peek()
		if err != nil {
			return err
		}
		l.pos++
		switch c {
		case ',':
		case ']':
			return nil
		default:
			return l.errorf("got %q in an array", c)
		}
	}
}

// skip reads any value.
func (l *lexer) skip() error {
	c, err := l.peek()
	if err != nil {
		return err
	}
	switch c {
	case '{':
		return l.object(func([]byte) error { return l.skip() })
	case '[':
		return l.array(func(int) error { return l.skip() })
	case '"':
		_, err := l.str()
		return err
	}
	_, err = l.scalar()
	return err
}
