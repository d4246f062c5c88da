//go:build e2e

package rollout

import (
	"context"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/lastcall-dev/lastcall/e2e/report"
	prestop "github.com/lastcall-dev/lastcall/preStop"
)

// podWatch follows a workload's pods through an informer and timestamps what the report needs
// when the harness sees it: deletion, container exit, and the number of ready pods. Times are
// when the watch event arrived, milliseconds after the fact, unlike the API's whole-second
// timestamps.
type podWatch struct {
	mu         sync.Mutex
	pods       map[types.UID]*podState
	ready      []report.Sample
	lastChange time.Time
	stop       context.CancelFunc
}

type podState struct {
	name             string
	deleted, exited  time.Time
	killAt, finished time.Time // the pod's deletionTimestamp, the app container's finishedAt
	exitCode         *int32
	helper           *prestop.Report // from the app container's termination message
	ready            bool
}

func watchPods(ctx context.Context, selector string) (*podWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &podWatch{pods: map[types.UID]*podState{}, stop: cancel}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := f.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.observe(obj, false) },
		UpdateFunc: func(_, obj any) { w.observe(obj, false) },
		DeleteFunc: func(obj any) { w.observe(obj, true) },
	})
	if err != nil {
		cancel()
		return nil, err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		cancel()
		return nil, ctx.Err()
	}
	return w, nil
}

func (w *podWatch) observe(obj any, gone bool) {
	now := time.Now()
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.pods[p.UID]
	if st == nil {
		st = &podState{name: p.Name}
		w.pods[p.UID] = st
	}
	if (gone || p.DeletionTimestamp != nil) && st.deleted.IsZero() {
		st.deleted = now
	}
	if p.DeletionTimestamp != nil && st.killAt.IsZero() {
		// the first one: once the containers ended, the kubelet deletes the pod again with
		// grace 0, which moves the deletionTimestamp to that moment
		st.killAt = p.DeletionTimestamp.Time
	}
	term := appTerminated(p)
	if term != nil && st.finished.IsZero() {
		st.finished, st.exitCode = term.FinishedAt.Time, &term.ExitCode
		if r, ok := prestop.ParseReport(term.Message); ok {
			st.helper = &r
		}
	}
	if st.exited.IsZero() && !st.deleted.IsZero() && (gone || term != nil) {
		st.exited = now
		w.lastChange = now
	}
	st.ready = !gone && p.DeletionTimestamp == nil && podReady(p)
	n := 0
	for _, s := range w.pods {
		if s.ready {
			n++
		}
	}
	if len(w.ready) == 0 || w.ready[len(w.ready)-1].Ready != n {
		w.ready = append(w.ready, report.Sample{T: now, Ready: n})
		w.lastChange = now
	}
}

// appTerminated is the app container's terminated state, nil while it runs.
func appTerminated(p *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "app" && c.State.Terminated != nil {
			return c.State.Terminated
		}
	}
	return nil
}

// uids lists the pods seen so far that are not being deleted.
func (w *podWatch) uids() map[types.UID]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[types.UID]bool{}
	for uid, s := range w.pods {
		if s.deleted.IsZero() {
			out[uid] = true
		}
	}
	return out
}

// progress reports how many ready pods there are, and whether every pod in old that was deleted
// has exited; deleted counts those of old that were deleted.
func (w *podWatch) progress(old map[types.UID]bool) (ready, deleted int, allExited bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	allExited = true
	for uid := range old {
		s := w.pods[uid]
		if s == nil || s.deleted.IsZero() {
			continue
		}
		deleted++
		if s.exited.IsZero() {
			allExited = false
		}
	}
	if len(w.ready) > 0 {
		ready = w.ready[len(w.ready)-1].Ready
	}
	return ready, deleted, allExited
}

// drains returns deletion → exit of the pods deleted after since, and when the last change to
// ready pods or exits was seen.
func (w *podWatch) drains(since time.Time) ([]report.Drain, []report.Sample, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []report.Drain
	for _, s := range w.pods {
		if !s.deleted.IsZero() && !s.exited.IsZero() && !s.deleted.Before(since) {
			out = append(out, report.Drain{Pod: s.name, Deleted: s.deleted, Exited: s.exited,
				KillAt: s.killAt, Finished: s.finished, ExitCode: s.exitCode, Helper: s.helper})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Deleted.Before(out[j].Deleted) })
	return out, append([]report.Sample(nil), w.ready...), w.lastChange
}
