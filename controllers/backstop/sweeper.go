package backstop

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/registry"
)

// Catalog is what the sweeper needs: a registry that lists every entry naming a pod and removes
// one.
type Catalog interface {
	Name() string
	Registrations(ctx context.Context) ([]registry.Registration, error)
	Remove(ctx context.Context, r registry.Registration) error
}

// Sweeper periodically removes a registry's entries whose pod no longer exists. It runs on the
// leader only.
type Sweeper struct {
	Registry Catalog
	// Pods reads pods from the API server directly: the manager's cache holds managed pods only,
	// and "not in the cache" must never be taken for "gone".
	Pods     client.Reader
	Interval time.Duration
	Log      logr.Logger
}

// Verdicts of Stale.
const (
	Alive   = "alive"
	Gone    = "gone"     // NotFound: the pod was deleted
	Reused  = "replaced" // a pod of that name exists with another UID
	Unknown = "unknown"  // the API did not say: never act on this
)

// Stale decides from one pod lookup whether the entry's pod is gone. Only NotFound, or a
// different UID under the same name, counts; any other error keeps the entry.
func Stale(p registry.Registration, pod *corev1.Pod, err error) string {
	switch {
	case p.Namespace == "" || p.Pod == "":
		return Unknown
	case apierrors.IsNotFound(err):
		return Gone
	case err != nil:
		return Unknown
	case string(pod.UID) != p.UID:
		return Reused
	default:
		return Alive
	}
}

// NeedLeaderElection keeps two replicas from sweeping at once.
func (s *Sweeper) NeedLeaderElection() bool { return true }

// Start sweeps every Interval until ctx ends.
func (s *Sweeper) Start(ctx context.Context) error {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		if n, err := s.Sweep(ctx); err != nil {
			s.Log.Error(err, "sweep failed")
		} else if n > 0 {
			s.Log.Info("swept stale registrations", "registry", s.Registry.Name(), "removed", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep runs once and returns how many entries it removed.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	name := s.Registry.Name()
	instances, err := s.Registry.Registrations(ctx)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, p := range instances {
		pod := &corev1.Pod{}
		getErr := s.Pods.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Pod}, pod)
		verdict := Stale(p, pod, getErr)
		if verdict == Unknown && getErr != nil {
			s.Log.V(1).Info("pod lookup failed, keeping the instance", "instance", p.Ref.String(), "err", getErr.Error())
		}
		if verdict != Gone && verdict != Reused {
			continue
		}
		if err := s.Registry.Remove(ctx, p); err != nil {
			return removed, fmt.Errorf("remove stale %s from %s: %w", p.Ref, name, err)
		}
		removed++
		metrics.StaleRemoved.WithLabelValues(name).Inc()
		s.Log.Info("removed stale registration", "registry", name, "instance", p.Ref.String(), "pod", p.Namespace+"/"+p.Pod, "uid", p.UID, "verdict", verdict)
	}
	return removed, nil
}
