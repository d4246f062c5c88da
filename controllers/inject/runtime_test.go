package inject

import "testing"

func TestMountsImageVolumes(t *testing.T) {
	tests := []struct {
		runtime string
		want    bool
	}{
		{"containerd://2.1.0", true},
		{"containerd://2.2.1", true},
		{"containerd://v2.1.4", true},
		{"containerd://2.1.0-rc.1", true},
		{"containerd://2.0.5", false},
		{"containerd://1.6.20", false},
		{"containerd://1.7.27-1", false},
		{"cri-o://1.31.0", true},
		{"cri-o://1.30.4", false},
		{"docker://28.0.1", false},
		{"containerd://", false},
		{"containerd://garbage", false},
		{"", false},
		{"2.1.0", false},
	}
	for _, tt := range tests {
		if got := MountsImageVolumes(tt.runtime); got != tt.want {
			t.Errorf("MountsImageVolumes(%q) = %v, want %v", tt.runtime, got, tt.want)
		}
	}
}
