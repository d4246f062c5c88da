package webhook

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Keys of the certificate Secret. tls.crt and tls.key are what a kubernetes.io/tls Secret and
// cert-manager use, so the server reads either.
const (
	keyCert   = "tls.crt"
	keyKey    = "tls.key"
	keyCACert = "ca.crt"
	keyCAKey  = "ca.key"
	// keyNextCA* hold the CA that replaces ca.crt: it is trusted (in bundle.crt) before any
	// serving certificate it signs is served.
	keyNextCACert = "next-ca.crt"
	keyNextCAKey  = "next-ca.key"
	// keyBundle is every CA the API server must trust: the webhook configuration's caBundle.
	keyBundle = "bundle.crt"
)

// backdate covers clocks a little behind ours (the API server's).
const backdate = time.Minute

// CertOptions say what serving certificate to keep and how long each certificate lives.
type CertOptions struct {
	// DNSNames the certificate is valid for (the Service's names); IP addresses are allowed.
	DNSNames []string
	// Validity of the serving certificate; it is renewed when a third of it is left.
	Validity time.Duration
	// CAValidity of the CA; at least Validity. A new CA is trusted for Dwell before it signs.
	CAValidity time.Duration
	// Dwell is how long a new CA sits in the caBundle before the serving certificate it signs
	// is served: the API server and every replica must have seen the new bundle by then.
	// Default: a tenth of Validity, at most 10 minutes.
	Dwell time.Duration
}

// withDefaults fills Dwell.
func (o CertOptions) withDefaults() CertOptions {
	if o.Dwell == 0 {
		o.Dwell = min(o.Validity/10, 10*time.Minute)
	}
	return o
}

// Check reports an unusable setting, naming the flag.
func (o CertOptions) Check() error {
	switch {
	case len(o.DNSNames) == 0:
		return errors.New("--webhook-service: the serving certificate needs at least one DNS name")
	case o.Validity < 3*time.Second:
		return fmt.Errorf("--webhook-cert-validity %s: want at least 3s (a year is usual)", o.Validity)
	case o.CAValidity < o.Validity:
		return fmt.Errorf("CA validity %s is shorter than --webhook-cert-validity %s", o.CAValidity, o.Validity)
	}
	return nil
}

// keyPair is a certificate with its key, parsed and as PEM.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// certState is the Secret's content, parsed.
type certState struct {
	ca, next, leaf *keyPair
	bundle         []byte
}

// parseState reads the Secret's data; anything unusable is an error and the state is remade.
func parseState(data map[string][]byte) (*certState, error) {
	ca, err := parsePair(data[keyCACert], data[keyCAKey])
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	leaf, err := parsePair(data[keyCert], data[keyKey])
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	s := &certState{ca: ca, leaf: leaf, bundle: data[keyBundle]}
	if len(data[keyNextCACert]) > 0 {
		if s.next, err = parsePair(data[keyNextCACert], data[keyNextCAKey]); err != nil {
			return nil, fmt.Errorf("next CA: %w", err)
		}
	}
	return s, nil
}

func (s *certState) data() map[string][]byte {
	d := map[string][]byte{
		keyCACert: s.ca.certPEM, keyCAKey: s.ca.keyPEM,
		keyCert: s.leaf.certPEM, keyKey: s.leaf.keyPEM,
		keyBundle: s.bundle,
	}
	if s.next != nil {
		d[keyNextCACert], d[keyNextCAKey] = s.next.certPEM, s.next.keyPEM
	}
	return d
}

func parsePair(certPEM, keyPEM []byte) (*keyPair, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	return &keyPair{cert: pair.Leaf, key: signer, certPEM: certPEM, keyPEM: keyPEM}, nil
}

// plan decides the next state at now: the same state (nil) when nothing is due, and when to
// look again. The steps keep every served certificate trusted: a new CA enters the bundle
// first, signs only after Dwell, and the CA it replaced leaves the bundle only at the next
// renewal of the serving certificate.
func plan(now time.Time, cur *certState, o CertOptions) (next *certState, reason string, wake time.Time, err error) {
	o = o.withDefaults()
	if cur == nil || !now.Before(cur.ca.cert.NotAfter) {
		ca, err := newCA(now, o.CAValidity)
		if err != nil {
			return nil, "", time.Time{}, err
		}
		s := &certState{ca: ca, bundle: ca.certPEM}
		if s.leaf, err = newLeaf(now, ca, o); err != nil {
			return nil, "", time.Time{}, err
		}
		return s, "created CA and serving certificate", wakeAt(s, o), nil
	}
	s := &certState{ca: cur.ca, next: cur.next, leaf: cur.leaf, bundle: cur.bundle}
	var reasons []string
	if s.next == nil && due(now, s.ca.cert, o.CAValidity) {
		if s.next, err = newCA(now, o.CAValidity); err != nil {
			return nil, "", time.Time{}, err
		}
		reasons = append(reasons, "new CA added to the caBundle")
	}
	if s.next != nil && !now.Before(promoteAt(s.next, o)) {
		old := s.ca
		s.ca, s.next = s.next, nil
		if s.leaf, err = newLeaf(now, s.ca, o); err != nil {
			return nil, "", time.Time{}, err
		}
		s.bundle = concat(s.ca, old) // the old CA still verifies replicas that serve its certificate
		reasons = append(reasons, "serving certificate signed by the new CA")
	} else if leafStale(now, s.leaf, s.ca, o) {
		if s.leaf, err = newLeaf(now, s.ca, o); err != nil {
			return nil, "", time.Time{}, err
		}
		s.bundle = concat(s.ca, s.next)
		reasons = append(reasons, "serving certificate renewed")
	}
	if want := concat(s.ca, s.next); !containsAll(s.bundle, want) {
		s.bundle = want // a bundle edited by hand, or written before a crash
		reasons = append(reasons, "caBundle repaired")
	}
	if len(reasons) == 0 {
		return nil, "", wakeAt(cur, o), nil
	}
	return s, fmt.Sprint(reasons), wakeAt(s, o), nil
}

// due reports that a third of the lifetime is left, or that the certificate lives longer than
// the options now allow.
func due(now time.Time, c *x509.Certificate, validity time.Duration) bool {
	return !now.Before(c.NotAfter.Add(-validity/3)) || c.NotAfter.Sub(now) > validity+backdate
}

func promoteAt(next *keyPair, o CertOptions) time.Time {
	return next.cert.NotBefore.Add(backdate + o.Dwell)
}

// leafStale reports a serving certificate to replace: due, not signed by the CA, or for other
// names. One capped by its CA's end is not renewed until the CA is replaced.
func leafStale(now time.Time, leaf, ca *keyPair, o CertOptions) bool {
	if leaf.cert.CheckSignatureFrom(ca.cert) != nil || !sameNames(leaf.cert, o.DNSNames) {
		return true
	}
	return due(now, leaf.cert, o.Validity) && leaf.cert.NotAfter.Before(ca.cert.NotAfter)
}

// wakeAt is the next time plan has something to do.
func wakeAt(s *certState, o CertOptions) time.Time {
	o = o.withDefaults()
	t := s.ca.cert.NotAfter.Add(-o.CAValidity / 3)
	if s.next != nil {
		t = promoteAt(s.next, o)
	}
	if l := s.leaf.cert.NotAfter.Add(-o.Validity / 3); l.Before(t) && s.leaf.cert.NotAfter.Before(s.ca.cert.NotAfter) {
		t = l
	}
	return t
}

func concat(pairs ...*keyPair) []byte {
	var b []byte
	for _, p := range pairs {
		if p != nil {
			b = append(b, p.certPEM...)
		}
	}
	return b
}

// containsAll reports whether bundle holds every certificate of want.
func containsAll(bundle, want []byte) bool {
	for rest := want; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return true
		}
		if !bytes.Contains(bundle, pem.EncodeToMemory(blk)) {
			return false
		}
	}
}

// union is a then every certificate of b that a lacks: the caBundle that trusts both.
func union(a, b []byte) []byte {
	out := slices.Clone(a)
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return out
		}
		if enc := pem.EncodeToMemory(blk); !bytes.Contains(out, enc) {
			out = append(out, enc...)
		}
	}
}

func sameNames(c *x509.Certificate, names []string) bool {
	var got []string
	got = append(got, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		got = append(got, ip.String())
	}
	want := slices.Clone(names)
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, slices.Compact(want))
}

func newCA(now time.Time, validity time.Duration) (*keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: fmt.Sprintf("lastcall-webhook-ca@%d", now.Unix())},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return sign(tmpl, nil)
}

func newLeaf(now time.Time, ca *keyPair, o CertOptions) (*keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: o.DNSNames[0]},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(o.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	for _, n := range slices.Compact(slices.Sorted(slices.Values(o.DNSNames))) {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return sign(tmpl, ca)
}

// sign makes a P-256 key and its certificate, self-signed when parent is nil.
func sign(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	parentCert, parentKey := tmpl, crypto.Signer(key)
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{
		cert: cert, key: key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}
