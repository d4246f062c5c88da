//go:build linux

package nftables

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Rule expressions as the kernel dumps them (nft --debug=netlink shows kube-proxy's), built
// attribute by attribute.
func nlExpr(name string, attrs ...[]byte) []byte {
	var data []byte
	for _, a := range attrs {
		data = append(data, a...)
	}
	e := appendAttr(nil, attrExprName, cstring(name))
	e = appendAttr(e, attrExprData, data)
	return appendAttr(nil, attrListElem, e)
}

func nlU32(typ uint16, v uint32) []byte {
	return appendAttr(nil, typ, binary.BigEndian.AppendUint32(nil, v))
}

func nlImmediate(reg uint32, value []byte) []byte {
	return nlExpr("immediate", nlU32(attrImmediateDreg, reg), appendAttr(nil, attrImmediateData, appendAttr(nil, attrDataValue, value)))
}

func nlGoto(chain string) []byte {
	code := int32(verdictGoto)
	verdict := append(nlU32(attrVerdictCode, uint32(code)), appendAttr(nil, attrVerdictChain, cstring(chain))...)
	return nlExpr("immediate", nlU32(attrImmediateDreg, 0), appendAttr(nil, attrImmediateData, appendAttr(nil, attrDataVerdict, verdict)))
}

func nlDNAT(addrReg, protoReg uint32) []byte {
	return nlExpr("nat", nlU32(attrNATType, natDNAT), nlU32(attrNATFamily, nfprotoIPv4), nlU32(attrNATRegAddrMin, addrReg), nlU32(attrNATRegProtoMin, protoReg))
}

func nlLookup(set string, dreg uint32) []byte {
	return nlExpr("lookup", appendAttr(nil, attrLookupSet, cstring(set)), nlU32(2, 1), nlU32(attrLookupDreg, dreg)) // sreg 1
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestDecodeRule(t *testing.T) {
	ip := []byte{10, 0, 0, 1}
	port := []byte{0, 80}
	meta := nlExpr("meta", nlU32(2, 16), nlU32(1, 1)) // meta load l4proto => reg 1
	tests := []struct {
		name  string
		exprs []byte
		want  string
	}{
		{"dnat to ip:port", cat(meta, nlImmediate(1, ip), nlImmediate(2, port), nlDNAT(1, 2)),
			"dnat=[10.0.0.1:80] goes=[] odd=false lookups=[]"},
		{"dnat through a map", cat(meta, nlExpr("numgen", nlU32(1, 1)), nlLookup("__map0", 1), nlDNAT(1, 9)),
			"dnat=[] goes=[] odd=false lookups=[{__map0 false 0 4 4}]"},
		{"verdict map", cat(nlExpr("numgen", nlU32(1, 1)), nlLookup("__map1", 0)),
			"dnat=[] goes=[] odd=false lookups=[{__map1 true 0 0 0}]"},
		{"goto an endpoint chain; other chains are not kept", cat(nlGoto("endpoint-AAAAAAAA-ns/a/tcp/p__10.0.0.1/80"), nlGoto("mark-for-masquerade")),
			"dnat=[] goes=[endpoint-AAAAAAAA-ns/a/tcp/p__10.0.0.1/80] odd=false lookups=[]"},
		{"register overwritten after the address was loaded", cat(nlImmediate(1, ip), nlImmediate(2, port), meta, nlDNAT(1, 2)),
			"dnat=[] goes=[] odd=true lookups=[]"},
		{"unknown expression before the DNAT", cat(nlImmediate(1, ip), nlImmediate(2, port), nlExpr("frobnicate"), nlDNAT(1, 2)),
			"dnat=[] goes=[] odd=true lookups=[]"},
		{"address from a map, port from an immediate", cat(nlLookup("__map0", 1), nlImmediate(2, port), nlDNAT(1, 2)),
			"dnat=[] goes=[] odd=true lookups=[]"},
		{"counter writes no register", cat(nlImmediate(1, ip), nlImmediate(2, port), nlExpr("counter"), nlDNAT(1, 2)),
			"dnat=[10.0.0.1:80] goes=[] odd=false lookups=[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Rules
			var lookups []lookup
			if err := decodeRule(tt.exprs, dataplane.IPv4, &r, &lookups); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("dnat=%v goes=%v odd=%v lookups=%v", r.DNAT, r.Goes, r.Odd, lookups); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if err := decodeRule([]byte{200, 0, 1, 0}, dataplane.IPv4, &Rules{}, new([]lookup)); err == nil {
		t.Error("malformed attribute: no error")
	}
}

func TestLookupApply(t *testing.T) {
	var r Rules
	l := lookup{set: "__map0", addrOff: 0, portOff: 4, addrLen: 4}
	l.apply(setElem{data: []byte{10, 0, 0, 2, 0x1f, 0x90, 0, 0}}, &r)
	l.apply(setElem{data: []byte{10, 0, 0}}, &r)
	lookup{verdicts: true}.apply(setElem{verdict: true, code: verdictGoto, chain: "endpoint-AAAAAAAA-ns/a/tcp/p__10.0.0.2/8080"}, &r)
	lookup{verdicts: true}.apply(setElem{verdict: true, code: 1}, &r) // accept
	if got, want := fmt.Sprintf("%v %v %v", r.DNAT, r.Goes, r.Odd), "[10.0.0.2:8080] [endpoint-AAAAAAAA-ns/a/tcp/p__10.0.0.2/8080] true"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
