package memory

import (
	"context"
	"errors"
	"testing"

	"github.com/lastcall-dev/lastcall/registry"
)

// The capabilities the controller's backstop and sweeper use, as a registry test would use them.
func TestRegistrationsAndRemove(t *testing.T) {
	ctx := context.Background()
	r := New("mem", Immediate)
	a := registry.Instance{Namespace: "shop", Pod: "web-a", UID: "a", Service: "web"}
	b := registry.Instance{Namespace: "shop", Pod: "web-b", UID: "b"}
	r.Register(a)
	r.Register(b)

	all, err := r.Registrations(ctx)
	if err != nil || len(all) != 2 || all[0] != (registry.Registration{Ref: registry.Ref{Service: "web", ID: "a"}, UID: "a", Namespace: "shop", Pod: "web-a"}) ||
		all[1].Ref != (registry.Ref{Service: "mem", ID: "b"}) {
		t.Fatalf("Registrations = %+v, %v", all, err)
	}
	mine, err := r.Instances(ctx, registry.Instance{UID: "b"})
	if err != nil || len(mine) != 1 || mine[0].Pod != "web-b" {
		t.Fatalf("Instances = %+v, %v", mine, err)
	}
	for range 2 { // removing is idempotent
		if err := r.Remove(ctx, mine[0]); err != nil {
			t.Fatal(err)
		}
	}
	if r.Registered("b") || !r.Registered("a") {
		t.Errorf("after Remove: a=%v b=%v, want only a", r.Registered("a"), r.Registered("b"))
	}
	if v, _ := r.Visible(ctx, registry.Instance{UID: "a", Service: "other"}); v {
		t.Error("visible under another service")
	}
	r.SetBehaviour(Fail)
	if _, err := r.Registrations(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("failing Registrations: %v", err)
	}
}
