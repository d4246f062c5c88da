package dataplane

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestDecide(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	ap := func(ip netip.Addr) netip.AddrPort { return netip.AddrPortFrom(ip, 80) }
	tests := []struct {
		name   string
		chains []Chain
		want   map[netip.Addr]State
	}{
		{"no chain", nil, map[netip.Addr]State{a: NotRouted, b: NotRouted}},
		{"beside a ready endpoint", []Chain{{Name: "c", Selected: []netip.AddrPort{ap(a)}, Others: true}}, map[netip.Addr]State{a: Routed, b: NotRouted}},
		{"only draining endpoints", []Chain{{Name: "c", Selected: []netip.AddrPort{ap(a), ap(b)}}}, map[netip.Addr]State{a: LastBackend, b: LastBackend}},
		{"routed wins over a fallback elsewhere", []Chain{
			{Name: "local", Local: true, Selected: []netip.AddrPort{ap(a)}},
			{Name: "cluster", Selected: []netip.AddrPort{ap(a)}, Others: true},
		}, map[netip.Addr]State{a: Routed, b: NotRouted}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewDraining([]netip.Addr{a, b})
			if err != nil {
				t.Fatal(err)
			}
			got := map[netip.Addr]State{}
			for ip, v := range Decide(d, tt.chains) {
				got[ip] = v.State
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecideRoutes(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	d, _ := NewDraining([]netip.Addr{a})
	ep := netip.AddrPortFrom(a, 80)
	got := Decide(d, []Chain{
		{Name: "KUBE-SVL-X", Service: "ns/b:http", Local: true, Selected: []netip.AddrPort{ep}},
		{Name: "KUBE-SVC-X", Service: "ns/b:http", Selected: []netip.AddrPort{ep, ep}, Others: true},
		{Name: "KUBE-SVC-Y", Service: "ns/a:http", Selected: []netip.AddrPort{ep}, Others: true},
	})[a]
	want := Verdict{State: Routed, Routes: []Route{
		{Service: "ns/a:http", Chain: "KUBE-SVC-Y", Endpoint: ep},
		{Service: "ns/b:http", Chain: "KUBE-SVC-X", Endpoint: ep},
		{Service: "ns/b:http", Chain: "KUBE-SVL-X", Local: true, Endpoint: ep, Fallback: true},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestNewDraining(t *testing.T) {
	d, err := NewDraining([]netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 2 || !d.Has(netip.MustParseAddr("10.0.0.1")) || !d.Has(netip.MustParseAddr("fe80::1")) {
		t.Errorf("got %+v", d)
	}
	if got := d.Families(); !reflect.DeepEqual(got, []Family{IPv4, IPv6}) {
		t.Errorf("families %v", got)
	}
	if _, err := NewDraining([]netip.Addr{{}}); err == nil || err.Error() != "draining[0] is not a valid IP address; pass the pod IPs from status.podIPs" {
		t.Errorf("got %v", err)
	}
}
