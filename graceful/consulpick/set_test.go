package consulpick

import (
	"slices"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestSetTakesEachInstancesAddress(t *testing.T) {
	entry := func(nodeAddr, svcAddr string, port int) *api.ServiceEntry {
		return &api.ServiceEntry{Node: &api.Node{Address: nodeAddr}, Service: &api.AgentService{Address: svcAddr, Port: port}}
	}
	tests := []struct {
		name    string
		entries []*api.ServiceEntry
		want    []string
	}{
		{"service address", []*api.ServiceEntry{entry("172.18.0.2", "10.244.1.7", 8080)}, []string{"10.244.1.7:8080"}},
		{"node address when the service has none", []*api.ServiceEntry{entry("172.18.0.2", "", 8080)}, []string{"172.18.0.2:8080"}},
		{"IPv6", []*api.ServiceEntry{entry("n", "fd00::7", 8080)}, []string{"[fd00::7]:8080"}},
		{"none", nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Picker{ready: make(chan struct{}), changed: make(chan struct{})}
			changed := p.Changed()
			p.set(tt.entries)
			if got := p.Hosts(); !slices.Equal(got, tt.want) {
				t.Errorf("Hosts() = %v, want %v", got, tt.want)
			}
			for name, ch := range map[string]<-chan struct{}{"Ready": p.Ready(), "Changed": changed} {
				select {
				case <-ch:
				default:
					t.Errorf("%s not closed after an answer", name)
				}
			}
		})
	}
}
