package ipbytes

import (
	"net/netip"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in       string
		addr     string // "" when not an address
		addrPort string // "" when not an address and port
	}{
		{"10.244.1.2", "10.244.1.2", ""},
		{"10.244.1.2:8080", "", "10.244.1.2:8080"},
		{"255.255.255.255:65535", "", "255.255.255.255:65535"},
		{"10.244.1.2:65536", "", ""},
		{"10.244.1.2:", "", ""},
		{"10.244.1.256", "", ""},
		{"010.1.1.1", "", ""},
		{"10.1.1", "", ""},
		{"10.1.1.1.1", "", ""},
		{"1234.1.1.1", "", ""},
		{"10.0.0.2-10.0.0.3:80", "", ""},
		{"fd00:10:244:1::2", "fd00:10:244:1::2", ""},
		{"[fd00:10:244:1::2]:8080", "", "[fd00:10:244:1::2]:8080"},
		{"::ffff:10.0.0.1", "::ffff:10.0.0.1", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		ip, ok := ParseAddr([]byte(tt.in))
		if got := str(ok, ip); got != tt.addr {
			t.Errorf("ParseAddr(%q) = %q, want %q", tt.in, got, tt.addr)
		}
		if want, err := netip.ParseAddr(tt.in); (err == nil) != ok || ok && want != ip {
			t.Errorf("ParseAddr(%q) disagrees with netip: %v %v", tt.in, want, err)
		}
		ap, ok := ParseAddrPort([]byte(tt.in))
		if got := str(ok, ap); got != tt.addrPort {
			t.Errorf("ParseAddrPort(%q) = %q, want %q", tt.in, got, tt.addrPort)
		}
		if want, err := netip.ParseAddrPort(tt.in); (err == nil) != ok || ok && want != ap {
			t.Errorf("ParseAddrPort(%q) disagrees with netip: %v %v", tt.in, want, err)
		}
	}
}

func str(ok bool, v interface{ String() string }) string {
	if !ok {
		return ""
	}
	return v.String()
}

func TestParseAddrPortDoesNotAllocate(t *testing.T) {
	b := []byte("10.244.1.2:8080")
	if n := testing.AllocsPerRun(100, func() { ParseAddrPort(b) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
