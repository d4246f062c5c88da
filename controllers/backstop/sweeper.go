package backstop

import (
	"context"
	"errors"
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
	// Pods answers first: the manager's cache, which holds every pod (those lastcall does not
	// manage as their identity only), so an entry whose pod is there costs no API call.
	Pods client.Reader
	// API confirms each removal the cache suggests, read from the API server: the cache may lag
	// behind (a pod created while its watch reconnects). Nil: Pods alone decides.
	API client.Reader
	// Interval is the time between sweeps, and the longest one sweep may take.
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
		sweep, cancel := context.WithTimeout(ctx, s.Interval)
		n, err := s.Sweep(sweep)
		cancel()
		if err != nil {
			s.Log.Error(err, "sweep incomplete; the next one retries", "removed", n)
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

// Sweep runs once and returns how many entries it removed. An entry it cannot remove does not
// stop it: every failure is counted, logged and returned together.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	name := s.Registry.Name()
	instances, err := s.Registry.Registrations(ctx)
	if err != nil {
		metrics.SweepFailures.WithLabelValues(name).Inc()
		return 0, fmt.Errorf("list %s entries: %w", name, err)
	}
	removed := 0
	var errs []error
	for _, p := range instances {
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("sweep cut short after %d of %d entries: %w", removed, len(instances), ctx.Err()))
			break
		}
		verdict := s.verdict(ctx, p)
		if verdict != Gone && verdict != Reused {
			continue
		}
		if err := s.Registry.Remove(ctx, p); err != nil {
			metrics.SweepFailures.WithLabelValues(name).Inc()
			s.Log.Error(err, "could not remove a stale registration", "registry", name, "instance", p.Ref.String(), "pod", p.Namespace+"/"+p.Pod)
			errs = append(errs, fmt.Errorf("remove stale %s from %s: %w", p.Ref, name, err))
			continue
		}
		removed++
		metrics.StaleRemoved.WithLabelValues(name).Inc()
		s.Log.Info("removed stale registration", "registry", name, "instance", p.Ref.String(), "pod", p.Namespace+"/"+p.Pod, "uid", p.UID, "verdict", verdict)
	}
	return removed, errors.Join(errs...)
}

// verdict asks the cache, and the API server before any removal.
func (s *Sweeper) verdict(ctx context.Context, p registry.Registration) string {
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Pod}
	readers := []client.Reader{s.Pods, s.API}
	var verdict string
	for _, r := range readers {
		if r == nil {
			break
		}
		pod := &corev1.Pod{}
		err := r.Get(ctx, key, pod)
		if verdict = Stale(p, pod, err); verdict == Unknown && err != nil {
			s.Log.V(1).Info("pod lookup failed, keeping the instance", "instance", p.Ref.String(), "err", err.Error())
		}
		if verdict != Gone && verdict != Reused {
			break
		}
	}
	return verdict
}
