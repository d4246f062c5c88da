package webhook

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/utils/ptr"

	"github.com/lastcall-dev/lastcall/controllers/inject"
)

// CheckLabel marks the pod Check sends. The webhook configuration's check.inject.lastcall.dev
// entry selects pods so labelled in the webhook's own namespace only, which the other entries
// exclude so that lastcall's own pods never depend on its webhook.
const CheckLabel = "lastcall.dev/inject-check"

// CheckPod is the pod Check dry-runs: labelled for injection and for the check entry, and
// restricted enough for any Pod Security level, so that only the webhook decides the answer.
func CheckPod(image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "lastcall-inject-check-",
			Labels:       map[string]string{inject.Label: "true", CheckLabel: "true"},
		},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: image,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

// ErrNotInjected is what Check returns when the API server kept admitting the pod uninjected.
var ErrNotInjected = errors.New("the API server admitted the check pod without injecting it")

// Check asks the API server, as a server-side dry run, to create CheckPod in pods' namespace,
// every interval until the answer comes back injected or ctx ends. A controller that is Ready
// is not yet proof: the API server calls the webhook through its Service, and a pod admitted
// before that route works is created uninjected (failurePolicy Ignore). A refusal that retrying
// cannot change (Forbidden, Invalid) ends the check at once.
func Check(ctx context.Context, pods typedcorev1.PodInterface, image string, interval time.Duration, log logr.Logger) error {
	pod := CheckPod(image)
	began := time.Now()
	var last error
	for tries := 1; ; tries++ {
		got, err := pods.Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && ctx.Err() != nil && last != nil {
			err = last // the deadline cut this try short: the previous answer says more
		}
		switch {
		case err == nil && got.Annotations[inject.InjectedAnnotation] != "":
			log.Info("the API server injects labelled pods", "tries", tries, "after", time.Since(began).Round(time.Millisecond).String())
			return nil
		case err == nil:
			err = ErrNotInjected
		case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
			return fmt.Errorf("dry-run create of the check pod: %w", err)
		}
		if last == nil || err.Error() != last.Error() {
			log.Info("not injected yet", "reason", err.Error(), "tries", tries)
		}
		last = err
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("no check pod came back injected in %s (%d tries); last: %w (is lastcall-controller Ready, and does its webhook Service have endpoints?)",
				time.Since(began).Round(time.Second), tries, last)
		case <-t.C:
		}
	}
}
