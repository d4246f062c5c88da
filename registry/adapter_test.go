package registry_test

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/envflag"
	"github.com/lastcall-dev/lastcall/registry/memory"
)

// picky is an adapter whose auto choice and check the test decides.
type picky struct {
	auto  bool
	check error
	addr  string
}

func (p *picky) Vars(registry.Binary) []envflag.Var {
	return []envflag.Var{{Flag: "picky-addr", Env: "LASTCALL_PICKY_ADDR", Help: "address", Set: envflag.String(&p.addr)}}
}
func (p *picky) Auto(registry.Env) bool   { return p.auto }
func (p *picky) Check(registry.Env) error { return p.check }
func (p *picky) New(registry.Env) (registry.Registry, error) {
	return nil, errors.New("cannot connect to " + p.addr)
}

func newSet(t *testing.T, p *picky, args []string, env map[string]string) (*registry.Set, error) {
	t.Helper()
	s := registry.NewSet(registry.PreStop, []registry.Adapter{
		memory.Adapter(memory.New("mem", memory.Immediate)),
		{Name: "picky", Options: func() registry.Options { return p }},
	})
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := envflag.Bind(fs, s.Vars())
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return s, b.Apply(func(k string) string { return env[k] })
}

func TestSetSelect(t *testing.T) {
	tests := []struct {
		name    string
		picky   picky
		args    []string
		want    []string
		wantErr string
	}{
		{"auto picks what says so", picky{auto: true}, nil, []string{"picky"}, ""},
		{"auto picks nothing", picky{}, nil, nil, ""},
		{"explicit, in table order, deduplicated", picky{}, []string{"--registries=picky,mem,picky"}, []string{"mem", "picky"}, ""},
		{"auto and a name", picky{}, []string{"--registries=auto,mem"}, []string{"mem"}, ""},
		{"a chosen registry's check fails", picky{check: errors.New("needs --picky-addr")}, []string{"--registries=picky"}, nil, "registry picky: needs --picky-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newSet(t, &tt.picky, tt.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Select(registry.Env{Binary: registry.PreStop})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("Select = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestSetUnknownRegistry(t *testing.T) {
	_, err := newSet(t, &picky{}, nil, map[string]string{"LASTCALL_REGISTRIES": "mem,etcd"})
	if err == nil || !strings.Contains(err.Error(), `unknown registry "etcd"; want a comma-separated list of mem, picky, or auto`) {
		t.Errorf("err = %v", err)
	}
}

func TestSetBuildKeepsWhatCanBeBuilt(t *testing.T) {
	s, err := newSet(t, &picky{}, []string{"--picky-addr=x:1", "--mem-behaviour=hang"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	regs, err := s.Build(registry.Env{Binary: registry.PreStop}, []string{"mem", "picky"})
	if len(regs) != 1 || regs[0].Name() != "mem" {
		t.Errorf("built %d registries, want mem alone", len(regs))
	}
	if err == nil || !strings.Contains(err.Error(), "registry picky: cannot connect to x:1") {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(s.Vars()[0].Help, "mem, picky, or auto (") {
		t.Errorf("--registries help = %q", s.Vars()[0].Help)
	}
}
