//go:build e2e

package rollout

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// Callers as they are (issue 15, label callers, `make e2e-callers`): every scenario again, under
// callers that tuned nothing — HTTP/1.1 with Go's default Transport, h2c, gRPC — on both paths.
// lastcall must fail no gRPC call, no h2c request and no HTTP/1.1 POST that carries an
// Idempotency-Key; plain HTTP/1.1 POSTs are measured (a keep-alive connection the server closes
// as the caller reuses it loses the request, whatever the server does). The control must fail
// in every protocol, else these runs could not tell lastcall from nothing.

var _ = Describe("callers with their default settings", Label("callers"), Ordered, ContinueOnFailure, func() {
	for _, base := range scenarios {
		sc := base
		sc.name += "-callers"
		sc.defaultCallers = true

		It(sc.name+" with lastcall fails no gRPC, h2c or idempotent HTTP/1.1 request on either path", Label("lastcall", base.name), func(ctx SpecContext) {
			var failed []string
			for i := 1; i <= conf.iterations; i++ {
				r, err := execute(ctx, withLastcall, sc, i)
				keep(r)
				Expect(err).NotTo(HaveOccurred())
				for _, s := range report.Summarize(r) {
					GinkgoWriter.Printf("%s\n", describe(s))
					if s.Failed > 0 && mustNotFail(s) {
						failed = append(failed, describe(s))
					}
				}
			}
			Expect(failed).To(BeEmpty(), "lastcall runs with failed requests from callers that must see none")
		}, SpecTimeout(time.Duration(conf.iterations)*runTimeout))

		It(sc.name+" without lastcall (control) fails requests in every protocol", Label("control", base.name), func(ctx SpecContext) {
			r, err := execute(ctx, control, sc, 1)
			keep(r)
			Expect(err).NotTo(HaveOccurred())
			failed := map[report.Protocol]int{}
			for _, s := range report.Summarize(r) {
				GinkgoWriter.Printf("%s\n", describe(s))
				failed[s.Proto] += s.Failed
			}
			for _, p := range []report.Protocol{report.ProtoHTTP1Default, report.ProtoH2C, report.ProtoGRPC} {
				Expect(failed).To(HaveKey(p), "the load generator reported no %s caller", p)
				Expect(failed[p]).To(BeNumerically(">", 0),
					"the control failed no %s request: this run could not tell lastcall from nothing for %s", p, p)
			}
		}, SpecTimeout(runTimeout))
	}
})

// mustNotFail: the callers lastcall promises zero to. A plain HTTP/1.1 POST on a reused
// keep-alive connection is not one of them: Go's Transport cannot resend it when the server's
// close crosses it, so its failures are measured, not asserted.
func mustNotFail(s report.Summary) bool {
	return s.Proto != report.ProtoHTTP1Default || s.Idem || s.Conn == report.ConnNew
}

// The keep-alive race (label keepalive-race, `make e2e-keepalive-race`): plain POSTs from Go's
// default client, the one caller lastcall makes no promise to, at E2E_RACE_RATE per path through
// rolling updates, with lastcall (E2E_ITERATIONS runs) and without it (as many), so that the
// report gives the race's rate over tens of thousands of requests each. lastcall must not
// fail more of them than the control.
var _ = Describe("the keep-alive race of plain HTTP/1.1 POSTs", Label("keepalive-race"), Ordered, func() {
	sc := rollingUpdate
	sc.name += "-plain-posts"
	sc.plainPOSTs = conf.raceRate

	It("fails no more plain POSTs with lastcall than without it", func(ctx SpecContext) {
		rate := map[string][2]int{} // variant → requests, failed
		for _, v := range []variant{withLastcall, control} {
			for i := 1; i <= conf.iterations; i++ {
				r, err := execute(ctx, v, sc, i)
				keep(r)
				Expect(err).NotTo(HaveOccurred())
				t := rate[v.name]
				for _, s := range report.Summarize(r) {
					GinkgoWriter.Printf("%s\n", describe(s))
					t[0] += s.Requests
					t[1] += s.Failed
				}
				rate[v.name] = t
			}
		}
		lc, ctl := rate[withLastcall.name], rate[control.name]
		GinkgoWriter.Printf("plain POSTs, Go's default client: lastcall %d of %d failed, control %d of %d\n", lc[1], lc[0], ctl[1], ctl[0])
		Expect(lc[1]*ctl[0]).To(BeNumerically("<=", ctl[1]*lc[0]), "lastcall's failure rate above the control's")
	}, SpecTimeout(time.Duration(2*conf.iterations)*runTimeout))
})
