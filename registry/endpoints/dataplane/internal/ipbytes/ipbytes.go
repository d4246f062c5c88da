// Package ipbytes parses IP addresses out of a ruleset dump without allocating for the common
// IPv4 case; at 50,000 endpoints per dump the allocations of netip.ParseAddr(string(b)) show.
package ipbytes

import "net/netip"

// ParseAddr parses an IPv4 or IPv6 address.
func ParseAddr(b []byte) (netip.Addr, bool) {
	if ip, n := parse4(b); n == len(b) && n > 0 {
		return ip, true
	}
	ip, err := netip.ParseAddr(string(b))
	return ip, err == nil
}

// ParseAddrPort parses "10.0.0.1:80" or "[fd00::1]:80".
func ParseAddrPort(b []byte) (netip.AddrPort, bool) {
	if ip, n := parse4(b); n > 0 && n < len(b)-1 && b[n] == ':' && len(b)-n-1 <= 5 {
		port := 0
		for _, c := range b[n+1:] {
			if c < '0' || c > '9' {
				port = -1
				break
			}
			port = port*10 + int(c-'0')
		}
		if port >= 0 && port <= 65535 {
			return netip.AddrPortFrom(ip, uint16(port)), true
		}
	}
	ap, err := netip.ParseAddrPort(string(b))
	return ap, err == nil
}

// parse4 parses a dotted-quad IPv4 address at the start of b and returns how many bytes it took,
// 0 if b does not start with one.
func parse4(b []byte) (netip.Addr, int) {
	var ip [4]byte
	i := 0
	for field := range 4 {
		if field > 0 {
			if i >= len(b) || b[i] != '.' {
				return netip.Addr{}, 0
			}
			i++
		}
		n, digits := 0, 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' && digits < 3 {
			n = n*10 + int(b[i]-'0')
			i++
			digits++
		}
		if digits == 0 || n > 255 || digits > 1 && b[i-digits] == '0' {
			return netip.Addr{}, 0
		}
		ip[field] = byte(n)
	}
	if i < len(b) && (b[i] >= '0' && b[i] <= '9' || b[i] == '.') {
		return netip.Addr{}, 0
	}
	return netip.AddrFrom4(ip), i
}
