package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lastcall-dev/lastcall/controllers/inject"
)

type blockerFunc func() string

func (f blockerFunc) Blocker(context.Context) (string, error) { return f(), nil }

// In image-volume mode the webhook injects the init container instead while a node's runtime
// cannot mount image volumes, and says so; in init-container mode it never asks.
func TestInjectorFallsBackFromImageVolume(t *testing.T) {
	const pod = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"web","image":"web:1"}]}}`
	tests := []struct {
		name        string
		mode        inject.Mode
		blocker     string
		imageVolume bool
		warning     string
	}{
		{"every runtime mounts image volumes", inject.ModeImageVolume, "", true, ""},
		{"a node's runtime cannot", inject.ModeImageVolume, "node kind-worker runs containerd://1.6.20", false, "node kind-worker runs containerd://1.6.20, which cannot mount image volumes"},
		{"init-container mode does not ask", inject.ModeInitContainer, "never asked", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testInject()
			o.Mode = tt.mode
			asked := false
			h := &Injector{Options: o, Runtimes: blockerFunc(func() string { asked = true; return tt.blocker })}
			resp := h.Handle(context.Background(), review(admissionv1.Create, "Pod", pod))
			if !resp.Allowed || len(resp.Patches) == 0 {
				t.Fatalf("want an allowed, patched pod: %+v", resp)
			}
			patch, err := json.Marshal(resp.Patches)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(patch), `"reference":"lastcall-prestop:test"`); got != tt.imageVolume {
				t.Errorf("image volume injected = %v, want %v: %s", got, tt.imageVolume, patch)
			}
			if got := strings.Contains(string(patch), `"path":"/spec/initContainers"`); got == tt.imageVolume {
				t.Errorf("init container injected = %v, want %v: %s", got, !tt.imageVolume, patch)
			}
			if tt.mode == inject.ModeInitContainer && asked {
				t.Error("init-container mode asked about the nodes' runtimes")
			}
			if tt.warning != "" && (len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], tt.warning)) {
				t.Errorf("warnings %q, want one containing %q", resp.Warnings, tt.warning)
			}
			if tt.warning == "" && len(resp.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", resp.Warnings)
			}
		})
	}
}

// nodeLister serves a node list and counts the reads.
type nodeLister struct {
	client.Reader
	nodes []corev1.Node
	err   error
	reads int
}

func (l *nodeLister) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	l.reads++
	if l.err != nil {
		return l.err
	}
	list.(*corev1.NodeList).Items = l.nodes
	return nil
}

func node(name, runtime string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: runtime}}}
}

func TestNodeRuntimesBlocker(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	l := &nodeLister{nodes: []corev1.Node{node("a", "containerd://2.1.4"), node("b", "containerd://1.6.20"), node("c", "")}}
	n := &nodeRuntimes{reader: l, now: func() time.Time { return now }}
	ask := func() string {
		t.Helper()
		got, err := n.Blocker(context.Background())
		if err != nil {
			t.Fatalf("Blocker: %v", err)
		}
		return got
	}
	if got := ask(); got != "node b runs containerd://1.6.20" {
		t.Errorf("Blocker = %q, want node b named", got)
	}
	// within the TTL the nodes are not read again, even when they changed
	l.nodes = []corev1.Node{node("a", "containerd://2.1.4")}
	now = now.Add(runtimesTTL - time.Second)
	if got := ask(); got != "node b runs containerd://1.6.20" || l.reads != 1 {
		t.Errorf("Blocker = %q after %d reads, want the cached answer after 1", got, l.reads)
	}
	now = now.Add(2 * time.Second)
	if got := ask(); got != "" {
		t.Errorf("Blocker = %q once every node's runtime can, want none", got)
	}
	// a failed read is an error (the webhook falls back to the init container) and is not kept
	l.err = errors.New("cache not started")
	now = now.Add(runtimesTTL)
	if _, err := n.Blocker(context.Background()); err == nil || !strings.Contains(err.Error(), "cache not started") {
		t.Errorf("Blocker error = %v on a failed read", err)
	}
	l.err = nil
	if got := ask(); got != "" || l.reads != 4 {
		t.Errorf("Blocker = %q after %d reads, want a new read answering none", got, l.reads)
	}
	if got := blocker([]corev1.Node{node("x", "")}); got != "node x runs a runtime it does not report" {
		t.Errorf("blocker of a node without a runtime version = %q", got)
	}
}

type unreadableNodes struct{}

func (unreadableNodes) Blocker(context.Context) (string, error) {
	return "", errors.New("list nodes: cache not started")
}

// Nodes that cannot be read are no proof that image volumes mount: the init container, and a
// warning that says why.
func TestInjectorFallsBackWhenNodesAreUnreadable(t *testing.T) {
	o := testInject()
	o.Mode = inject.ModeImageVolume
	h := &Injector{Options: o, Runtimes: unreadableNodes{}}
	resp := h.Handle(context.Background(), review(admissionv1.Create, "Pod",
		`{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"web","image":"web:1"}]}}`))
	patch, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(patch), `"path":"/spec/initContainers"`) || strings.Contains(string(patch), `"reference"`) {
		t.Errorf("want the init container, not the image volume: %s", patch)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "cannot tell whether every node's runtime mounts image volumes (list nodes: cache not started)") {
		t.Errorf("warnings %q", resp.Warnings)
	}
}
