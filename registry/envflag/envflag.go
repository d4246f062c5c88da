// Package envflag binds settings to command-line flags that fall back to environment variables
// and then to defaults, so that lastcall's binaries and every registry adapter declare each
// setting once: its flag, its variable, its default and its help. A bad value is a one-line
// error naming where it came from, the flag, the variable and what is allowed.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Var is one setting.
type Var struct {
	// Flag is the flag name without dashes; empty for a setting read from the environment only
	// (secrets, which must not show in a process list).
	Flag string
	// Env is the environment variable read when the flag is not given.
	Env string
	// Fallback lists further variables read, in order, when Env is empty (CONSUL_HTTP_ADDR).
	Fallback []string
	// Default applies when neither the flag nor a variable is set.
	Default string
	Help    string
	// Bool makes the flag take no value: --leader-elect means true.
	Bool bool
	// Set parses and stores a value; its error says what is allowed.
	Set func(v string) error
}

// Bound is a set of Vars registered on a flag set.
type Bound struct {
	fs    *flag.FlagSet
	vars  []Var
	given map[string]string
}

// Bind registers each Var that has a flag on fs. Parse fs, then call Apply.
func Bind(fs *flag.FlagSet, vars []Var) *Bound {
	b := &Bound{fs: fs, vars: vars, given: map[string]string{}}
	for _, v := range vars {
		if v.Flag == "" {
			continue
		}
		// Values are applied by Apply, after the environment, so one error format fits all.
		record := func(s string) error { b.given[v.Flag] = s; return nil }
		if v.Bool {
			fs.BoolFunc(v.Flag, v.Help, record)
		} else {
			fs.Func(v.Flag, v.Help, record)
		}
	}
	return b
}

// Apply sets every Var from its flag, else its variables, else its default.
func (b *Bound) Apply(getenv func(string) string) error {
	if errs := b.apply(getenv, false); len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// ApplyLenient is Apply for a caller that must go on whatever it was given (a preStop hook
// that must not cost requests over a typo): a value that does not parse is reported, and the
// next source in precedence (variables, then the default) is used instead.
func (b *Bound) ApplyLenient(getenv func(string) string) []error {
	return b.apply(getenv, true)
}

// apply sets every Var from its sources in precedence order: flag, variables, default. Strict,
// it stops at the first value that does not parse; lenient, it takes the next source.
func (b *Bound) apply(getenv func(string) string, lenient bool) []error {
	var errs []error
	for _, v := range b.vars {
		type source struct{ val, from string }
		var srcs []source
		if f, ok := b.given[v.Flag]; ok && v.Flag != "" {
			srcs = append(srcs, source{f, "flag --" + v.Flag})
		}
		for _, env := range append([]string{v.Env}, v.Fallback...) {
			if e := getenv(env); env != "" && e != "" {
				srcs = append(srcs, source{e, "env " + env})
			}
		}
		srcs = append(srcs, source{v.Default, "default"})
		if !lenient {
			srcs = srcs[:1]
		}
		for _, s := range srcs {
			err := v.Set(s.val)
			if err == nil {
				break
			}
			err = fmt.Errorf("invalid %s=%q (%s): %w", s.from, s.val, v.names(), err)
			if !lenient {
				return []error{err}
			}
			errs = append(errs, err)
		}
	}
	return errs
}

// names is how errors and help name the setting: "--quiet / LASTCALL_QUIET".
func (v Var) names() string {
	envs := strings.Join(append([]string{v.Env}, v.Fallback...), " or ")
	if v.Flag == "" {
		return envs
	}
	return "--" + v.Flag + " / " + envs
}

// Usage writes every Var with its variables and default, then the flag set's other flags.
func (b *Bound) Usage(w io.Writer) {
	bound := map[string]bool{}
	for _, v := range b.vars {
		bound[v.Flag] = true
		head := "$" + strings.Join(append([]string{v.Env}, v.Fallback...), " or $")
		if v.Flag != "" {
			head = "--" + v.Flag + ", " + head
		}
		if v.Default != "" {
			head += " (default " + v.Default + ")"
		}
		fmt.Fprintf(w, "  %s\n      %s\n", head, v.Help)
	}
	b.fs.VisitAll(func(f *flag.Flag) {
		if bound[f.Name] {
			return
		}
		head := "--" + f.Name
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" { // zero values, as flag.PrintDefaults does
			head += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "  %s\n      %s\n", head, f.Usage)
	})
}

// Row is how a Markdown table of settings (README) starts the setting's row:
// "| `--flag` | `ENV` or `FALLBACK` | `default` |", an empty cell being "| |".
func Row(v Var) string {
	var envs []string
	for _, e := range append([]string{v.Env}, v.Fallback...) {
		envs = append(envs, "`"+e+"`")
	}
	cells := []string{"", strings.Join(envs, " or "), ""}
	if v.Flag != "" {
		cells[0] = "`--" + v.Flag + "`"
	}
	if v.Default != "" {
		cells[2] = "`" + v.Default + "`"
	}
	row := "|"
	for _, c := range cells {
		if c == "" {
			row += " |"
		} else {
			row += " " + c + " |"
		}
	}
	return row
}

// String stores a value with surrounding space trimmed.
func String(p *string) func(string) error {
	return func(v string) error { *p = strings.TrimSpace(v); return nil }
}

// List stores a comma-separated list, empty items dropped.
func List(p *[]string) func(string) error {
	return func(v string) error { *p = Split(v); return nil }
}

// OneOf stores one of the allowed values.
func OneOf(p *string, allowed ...string) func(string) error {
	return func(v string) error {
		if !slices.Contains(allowed, v) {
			return fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
		}
		*p = v
		return nil
	}
}

// Duration stores a Go duration of zero or more.
func Duration(p *time.Duration) func(string) error { return duration(p, false) }

// PositiveDuration stores a Go duration above zero.
func PositiveDuration(p *time.Duration) func(string) error { return duration(p, true) }

func duration(p *time.Duration, positive bool) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			return errors.New("want a duration such as 500ms, 2s or 1m")
		case positive && d <= 0:
			return errors.New("want a duration above zero")
		case d < 0:
			return errors.New("want a duration of zero or more")
		}
		*p = d
		return nil
	}
}

// Bool stores true or false (1, t, TRUE, ... as strconv.ParseBool reads them).
func Bool(p *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*p = b
		return nil
	}
}

// Int stores an integer of at least min.
func Int(p *int, min int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			return fmt.Errorf("want a whole number of at least %d", min)
		}
		*p = n
		return nil
	}
}

// Float stores a number above zero.
func Float(p *float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			return errors.New("want a number above zero")
		}
		*p = f
		return nil
	}
}

// URL stores an http(s) URL without its trailing slash; empty stays empty.
func URL(p *string) func(string) error {
	return func(v string) error {
		if v == "" {
			*p = ""
			return nil
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("want an http(s) URL such as http://127.0.0.1:9901")
		}
		*p = strings.TrimSuffix(v, "/")
		return nil
	}
}

// Split splits a comma-separated list, trimming items and dropping empty ones.
func Split(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
