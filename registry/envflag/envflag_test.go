package envflag

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

type settings struct {
	addr  string
	wait  time.Duration
	elect bool
	token string
}

func (s *settings) vars() []Var {
	return []Var{
		{Flag: "addr", Env: "APP_ADDR", Fallback: []string{"OLD_ADDR"}, Default: "localhost", Help: "address", Set: String(&s.addr)},
		{Flag: "wait", Env: "APP_WAIT", Default: "1s", Help: "wait", Set: PositiveDuration(&s.wait)},
		{Flag: "elect", Env: "APP_ELECT", Default: "false", Help: "elect", Bool: true, Set: Bool(&s.elect)},
		{Env: "APP_TOKEN", Help: "token", Set: String(&s.token)},
	}
}

func parse(args []string, env map[string]string) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := Bind(fs, s.vars())
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	return s, b.Apply(func(k string) string { return env[k] })
}

func TestApplyPrecedence(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want settings
	}{
		{"defaults", nil, nil, settings{addr: "localhost", wait: time.Second}},
		{"fallback variable over default", nil, map[string]string{"OLD_ADDR": "b"}, settings{addr: "b", wait: time.Second}},
		{"variable over fallback", nil, map[string]string{"OLD_ADDR": "b", "APP_ADDR": "a"}, settings{addr: "a", wait: time.Second}},
		{"flag over variable", []string{"--addr", "f"}, map[string]string{"APP_ADDR": "a"}, settings{addr: "f", wait: time.Second}},
		{"bare bool flag", []string{"--elect"}, nil, settings{addr: "localhost", wait: time.Second, elect: true}},
		{"bool flag false over variable", []string{"--elect=false"}, map[string]string{"APP_ELECT": "true"}, settings{addr: "localhost", wait: time.Second}},
		{"environment-only setting", nil, map[string]string{"APP_TOKEN": "secret"}, settings{addr: "localhost", wait: time.Second, token: "secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.args, tt.env)
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestApplyErrorsNameTheSourceAndTheSetting(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"flag", []string{"--wait=0s"}, nil, []string{`flag --wait="0s"`, "--wait / APP_WAIT", "above zero"}},
		{"variable", nil, map[string]string{"APP_WAIT": "soon"}, []string{`env APP_WAIT="soon"`, "500ms"}},
		{"fallback variable", nil, map[string]string{"APP_ELECT": "perhaps"}, []string{"env APP_ELECT", "true or false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.args, tt.env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestApplyLenientTakesTheNextSource(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want time.Duration
		errs []string // one per value that did not parse, in precedence order
	}{
		{"good flag", []string{"--wait=2s"}, nil, 2 * time.Second, nil},
		{"bad flag: the variable", []string{"--wait=banana"}, map[string]string{"APP_WAIT": "3s"}, 3 * time.Second, []string{`flag --wait="banana"`}},
		{"bad flag and variable: the default", []string{"--wait=0s"}, map[string]string{"APP_WAIT": "soon"}, time.Second,
			[]string{`flag --wait="0s"`, `env APP_WAIT="soon"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s settings
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			b := Bind(fs, s.vars())
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			errs := b.ApplyLenient(func(k string) string { return tt.env[k] })
			if s.wait != tt.want || s.addr != "localhost" {
				t.Errorf("wait %s, addr %q; want %s and the other settings applied", s.wait, s.addr, tt.want)
			}
			if len(errs) != len(tt.errs) {
				t.Fatalf("errors %v, want %d", errs, len(tt.errs))
			}
			for i, w := range tt.errs {
				if !strings.Contains(errs[i].Error(), w) || !strings.Contains(errs[i].Error(), "--wait / APP_WAIT") {
					t.Errorf("error %q lacks %q or the setting's names", errs[i], w)
				}
			}
		})
	}
}

func TestUsageListsSettingsThenOtherFlags(t *testing.T) {
	var s settings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	b := Bind(fs, s.vars())
	fs.Int("zap-level", 0, "a flag bound elsewhere")
	var buf bytes.Buffer
	b.Usage(&buf)
	out := buf.String()
	for _, w := range []string{"--addr, $APP_ADDR or $OLD_ADDR (default localhost)\n      address", "\n  $APP_TOKEN\n      token", "--zap-level\n      a flag bound elsewhere"} {
		if !strings.Contains(out, w) {
			t.Errorf("usage lacks %q:\n%s", w, out)
		}
	}
	if strings.Index(out, "--zap-level") < strings.Index(out, "$APP_TOKEN") {
		t.Errorf("other flags before the settings:\n%s", out)
	}
}

func TestRow(t *testing.T) {
	var s settings
	v := s.vars()
	for i, want := range []string{
		"| `--addr` | `APP_ADDR` or `OLD_ADDR` | `localhost` |",
		"| `--wait` | `APP_WAIT` | `1s` |",
		"| `--elect` | `APP_ELECT` | `false` |",
		"| | `APP_TOKEN` | |",
	} {
		if got := Row(v[i]); got != want {
			t.Errorf("Row = %s, want %s", got, want)
		}
	}
}

func TestValueParsers(t *testing.T) {
	var (
		list []string
		one  string
		n    int
		f    float64
		u    string
		d    time.Duration
	)
	tests := []struct {
		set     func(string) error
		in      string
		wantErr string
	}{
		{List(&list), " a, ,b ", ""},
		{OneOf(&one, "json", "text"), "xml", "json, text"},
		{Int(&n, 1), "0", "at least 1"},
		{Float(&f), "-1", "above zero"},
		{URL(&u), "127.0.0.1:9901", "http(s) URL"},
		{URL(&u), "http://127.0.0.1:9901/", ""},
		{Duration(&d), "-1s", "zero or more"},
		{Duration(&d), "0", ""},
	}
	for _, tt := range tests {
		err := tt.set(tt.in)
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%q: err %v, want %q", tt.in, err, tt.wantErr)
		}
	}
	if strings.Join(list, "|") != "a|b" || u != "http://127.0.0.1:9901" {
		t.Errorf("list %q, url %q", list, u)
	}
}
