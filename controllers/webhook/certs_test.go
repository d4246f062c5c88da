package webhook

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

// step runs plan at now and returns the state to carry on with.
func step(t *testing.T, now time.Time, cur *certState, o CertOptions) (*certState, string) {
	t.Helper()
	next, reason, wake, err := plan(now, cur, o)
	if err != nil {
		t.Fatal(err)
	}
	if !wake.After(now) {
		t.Fatalf("at %s: wake %s is not later: plan would spin", now, wake)
	}
	if next == nil {
		return cur, ""
	}
	// what the Secret stores is what the next round reads
	back, err := parseState(next.data())
	if err != nil {
		t.Fatalf("the planned state does not parse back: %v", err)
	}
	return back, reason
}

// trusted reports whether the bundle verifies the serving certificate at now.
func trusted(s *certState, now time.Time, name string) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.bundle)
	_, err := s.leaf.cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: now})
	return err
}

// Over three CA lifetimes, at one-minute steps: every served certificate is always trusted by
// the bundle written before it (the order of writes in reconcile), the serving certificate is
// renewed before it expires, and a new CA is trusted for Dwell before it signs.
func TestPlanKeepsEveryServedCertificateTrusted(t *testing.T) {
	o := CertOptions{DNSNames: []string{"lastcall-webhook.lastcall-system.svc"}, Validity: 90 * time.Minute, CAValidity: 6 * time.Hour, Dwell: 5 * time.Minute}
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	s, reason := step(t, now, nil, o)
	if !strings.Contains(reason, "created") {
		t.Fatalf("first plan: %q", reason)
	}
	renewals, caChanges := 0, 0
	var nextSeen time.Time
	for end := now.Add(18 * time.Hour); now.Before(end); now = now.Add(time.Minute) {
		prev := s
		s, reason = step(t, now, prev, o)
		if s == prev {
			if err := trusted(s, now, o.DNSNames[0]); err != nil {
				t.Fatalf("at %s the served certificate is not trusted: %v", now, err)
			}
			continue
		}
		// between the writes: the caBundle is the union, then the Secret changes
		between := &certState{leaf: s.leaf, bundle: union(prev.bundle, s.bundle)}
		if err := trusted(between, now, o.DNSNames[0]); err != nil {
			t.Fatalf("at %s (%s): the new certificate is not trusted by the union bundle: %v", now, reason, err)
		}
		// a replica that still serves the old certificate is trusted by the new bundle
		if err := trusted(&certState{leaf: prev.leaf, bundle: s.bundle}, now, o.DNSNames[0]); err != nil {
			t.Fatalf("at %s (%s): the previous certificate is no longer trusted: %v", now, reason, err)
		}
		if s.next != nil && prev.next == nil {
			nextSeen = now
		}
		if !prev.ca.cert.Equal(s.ca.cert) {
			caChanges++
			if now.Sub(nextSeen) < o.Dwell {
				t.Errorf("at %s a CA signs %s after it entered the bundle, want ≥ %s", now, now.Sub(nextSeen), o.Dwell)
			}
		}
		if !prev.leaf.cert.Equal(s.leaf.cert) {
			renewals++
			if left := prev.leaf.cert.NotAfter.Sub(now); left < o.Validity/4 {
				t.Errorf("at %s the serving certificate was renewed with only %s left", now, left)
			}
		}
	}
	if renewals < 10 || caChanges < 2 {
		t.Errorf("%d renewals and %d CA changes in 18h, want ≥ 10 and ≥ 2", renewals, caChanges)
	}
}

func TestPlanRepairs(t *testing.T) {
	o := CertOptions{DNSNames: []string{"a.ns.svc"}, Validity: time.Hour, CAValidity: 4 * time.Hour}
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	s, _ := step(t, now, nil, o)

	t.Run("new DNS names", func(t *testing.T) {
		o2 := o
		o2.DNSNames = []string{"b.ns.svc"}
		got, reason := step(t, now.Add(time.Minute), s, o2)
		if got.leaf.cert.DNSNames[0] != "b.ns.svc" || !got.ca.cert.Equal(s.ca.cert) {
			t.Errorf("%q: names %v, CA kept %v", reason, got.leaf.cert.DNSNames, got.ca.cert.Equal(s.ca.cert))
		}
	})
	t.Run("caBundle emptied", func(t *testing.T) {
		broken := *s
		broken.bundle = nil
		got, reason := step(t, now.Add(time.Minute), &broken, o)
		if !strings.Contains(reason, "caBundle repaired") || trusted(got, now, "a.ns.svc") != nil {
			t.Errorf("%q: bundle not repaired", reason)
		}
	})
	t.Run("shorter validity", func(t *testing.T) {
		o2 := o
		o2.Validity = 10 * time.Minute
		got, _ := step(t, now.Add(time.Minute), s, o2)
		if got.leaf.cert.NotAfter.After(now.Add(12 * time.Minute)) {
			t.Errorf("certificate lives until %s after the validity was shortened", got.leaf.cert.NotAfter)
		}
	})
	t.Run("expired CA", func(t *testing.T) {
		got, reason := step(t, now.Add(5*time.Hour), s, o)
		if !strings.Contains(reason, "created") || got.ca.cert.Equal(s.ca.cert) {
			t.Errorf("%q: an expired CA must be remade", reason)
		}
	})
	t.Run("unreadable Secret", func(t *testing.T) {
		if _, err := parseState(map[string][]byte{keyCert: []byte("junk")}); err == nil {
			t.Error("parseState accepted junk")
		}
	})
}

func TestCertOptionsCheck(t *testing.T) {
	for _, tt := range []struct {
		o    CertOptions
		want string
	}{
		{CertOptions{Validity: time.Hour, CAValidity: time.Hour}, "--webhook-service"},
		{CertOptions{DNSNames: []string{"a"}, Validity: time.Second, CAValidity: time.Hour}, "--webhook-cert-validity"},
		{CertOptions{DNSNames: []string{"a"}, Validity: time.Hour, CAValidity: time.Minute}, "CA validity"},
	} {
		if err := tt.o.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check(%+v) = %v, want an error naming %s", tt.o, err, tt.want)
		}
	}
}
