package webhook

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/lastcall-dev/lastcall/controllers/inject"
)

// Check keeps asking while the answer can change, and stops at once when it cannot.
func TestCheckAnswers(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	injectedPod := func(p *corev1.Pod) *corev1.Pod {
		p = p.DeepCopy()
		p.Annotations = map[string]string{inject.InjectedAnnotation: "init-container"}
		return p
	}
	for _, tt := range []struct {
		name    string
		answers []func(*corev1.Pod) (*corev1.Pod, error) // then the last one again
		tries   int
		wantErr string // "" passes
	}{
		{name: "injected at once", tries: 1,
			answers: []func(*corev1.Pod) (*corev1.Pod, error){func(p *corev1.Pod) (*corev1.Pod, error) { return injectedPod(p), nil }}},
		{name: "uninjected, then an error, then injected", tries: 3,
			answers: []func(*corev1.Pod) (*corev1.Pod, error){
				func(p *corev1.Pod) (*corev1.Pod, error) { return p, nil },
				func(*corev1.Pod) (*corev1.Pod, error) {
					return nil, apierrors.NewInternalError(errors.New("webhook: connection refused"))
				},
				func(p *corev1.Pod) (*corev1.Pod, error) { return injectedPod(p), nil },
			}},
		{name: "forbidden ends at once", tries: 1, wantErr: "forbidden",
			answers: []func(*corev1.Pod) (*corev1.Pod, error){func(*corev1.Pod) (*corev1.Pod, error) {
				return nil, apierrors.NewForbidden(pods, "", errors.New("cannot create pods"))
			}}},
		{name: "never injected: the timeout names why", wantErr: ErrNotInjected.Error(),
			answers: []func(*corev1.Pod) (*corev1.Pod, error){func(p *corev1.Pod) (*corev1.Pod, error) { return p, nil }}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset()
			tries := 0
			cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				c := a.(k8stesting.CreateActionImpl)
				if !slices.Equal(c.CreateOptions.DryRun, []string{"All"}) {
					t.Error("not a dry run")
				}
				answer := tt.answers[min(tries, len(tt.answers)-1)]
				tries++
				p, err := answer(c.GetObject().(*corev1.Pod))
				if p == nil {
					return true, nil, err
				}
				return true, p, err
			})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := Check(ctx, cs.CoreV1().Pods("lastcall-system"), "img", 10*time.Millisecond, logr.Discard())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Check = %v, want an error mentioning %q", err, tt.wantErr)
			}
			if tt.tries > 0 && tries != tt.tries {
				t.Errorf("%d tries, want %d", tries, tt.tries)
			}
		})
	}
}
