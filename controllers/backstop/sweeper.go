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
	"github.com/lastcall-dev/lastcall/registry/consul"
)

// Catalog is what the sweeper needs of the Consul registry.
type Catalog interface {
	PodInstances(ctx context.Context) ([]consul.PodInstance, error)
	Remove(ctx context.Context, p consul.PodInstance) error
}

// Sweeper periodically removes Consul instances whose pod no longer exists. It runs on the
// leader only.
type Sweeper struct {
	Consul Catalog
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

// Stale decides from one pod lookup whether the instance's pod is gone. Only NotFound, or a
// different UID under the same name, counts; any other error keeps the instance.
func Stale(p consul.PodInstance, pod *corev1.Pod, err error) string {
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
			s.Log.Info("swept stale Consul registrations", "removed", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep runs once and returns how many instances it removed.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	instances, err := s.Consul.PodInstances(ctx)
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
		if err := s.Consul.Remove(ctx, p); err != nil {
			return removed, fmt.Errorf("remove stale %s: %w", p.Ref, err)
		}
		removed++
		metrics.StaleRemoved.Inc()
		s.Log.Info("removed stale Consul registration", "instance", p.Ref.String(), "pod", p.Namespace+"/"+p.Pod, "uid", p.UID, "verdict", verdict)
	}
	return removed, nil
}
