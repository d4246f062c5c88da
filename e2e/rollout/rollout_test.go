//go:build e2e

package rollout

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// runTimeout bounds one run: deploy (≤ 3 min), warm-up, rollout (≤ 5 min), tail, teardown.
const runTimeout = 12 * time.Minute

var _ = Describe("rollouts under load", Ordered, ContinueOnFailure, func() {
	for _, sc := range scenarios {
		It(sc.name+" with lastcall fails no request on either path", Label("lastcall", sc.name), func(ctx SpecContext) {
			var failed []string
			for i := 1; i <= conf.iterations; i++ {
				r, err := execute(ctx, withLastcall, sc, i)
				keep(r)
				Expect(err).NotTo(HaveOccurred())
				for _, s := range report.Summarize(r) {
					if s.Failed > 0 {
						failed = append(failed, describe(s))
					}
				}
			}
			Expect(failed).To(BeEmpty(), "lastcall runs with failed requests")
		}, SpecTimeout(time.Duration(conf.iterations)*runTimeout))
	}

	for _, sc := range scenarios {
		It(sc.name+" without lastcall (control) fails requests on each path", Label("control", sc.name), func(ctx SpecContext) {
			r, err := execute(ctx, control, sc, 1)
			keep(r)
			Expect(err).NotTo(HaveOccurred())
			sums := report.Summarize(r)
			Expect(paths(sums)).To(ConsistOf(report.Path("service"), report.Path("consul")), "the load generator reported both paths")
			for _, s := range sums {
				Expect(s.Failed).To(BeNumerically(">", 0),
					"the control run failed no request on the %s path: this test could not tell lastcall from nothing (%s)", s.Path, describe(s))
			}
		}, SpecTimeout(runTimeout))
	}

	It("finds the smallest native preStop sleep that fails no request through the Service", Label("baseline", rollingUpdate.name), func(ctx SpecContext) {
		// a value counts only if every one of its runs failed nothing: one lucky run proves little
		for _, n := range conf.sleeps {
			v := sleepVariant(n)
			zero := true
			for i := 1; i <= conf.iterations && zero; i++ {
				r, err := execute(ctx, v, rollingUpdate, i)
				keep(r)
				Expect(err).NotTo(HaveOccurred())
				for _, s := range report.Summarize(r) {
					GinkgoWriter.Printf("%s\n", describe(s))
					if s.Path == report.PathService && s.Failed > 0 {
						zero = false
					}
				}
			}
			if zero {
				GinkgoWriter.Printf("preStop sleep %ds: no failed request through the Service in %d runs\n", n, conf.iterations)
				return
			}
		}
		GinkgoWriter.Printf("no preStop sleep in %v failed zero requests through the Service in every run\n", conf.sleeps)
	}, SpecTimeout(time.Duration(len(conf.sleeps)*conf.iterations)*runTimeout))
})

func keep(r report.Run) {
	if len(r.Records) > 0 {
		runs = append(runs, r)
	}
}

func paths(sums []report.Summary) []report.Path {
	var out []report.Path
	for _, s := range sums {
		out = append(out, s.Path)
	}
	return out
}

func describe(s report.Summary) string {
	var classes []string
	for o, n := range s.Failures {
		classes = append(classes, fmt.Sprintf("%s=%d", o, n))
	}
	return fmt.Sprintf("%s · %s · #%d · %s: %d requests, %d failed [%s], drain p50 %s, rollout %s",
		s.Scenario, s.Variant, s.Iteration, s.Caller(), s.Requests, s.Failed, strings.Join(classes, " "),
		s.DrainP50.Round(time.Millisecond), s.Rollout.Round(time.Millisecond))
}
