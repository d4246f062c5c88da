//go:build go1.24

package graceful

import (
	"net/http"
	"os"
	"strings"
)

// http2Protocols reports whether srv serves HTTP/2 over TLS and with prior knowledge (h2c), as
// net/http decides it, when net/http would serve it with its own copy of HTTP/2.
func http2Protocols(srv *http.Server) (tlsH2, h2c bool) {
	if srv.TLSNextProto != nil || strings.Contains(os.Getenv("GODEBUG"), "http2server=0") {
		return false, false // the app chose its HTTP/2, or none
	}
	if p := srv.Protocols; p != nil {
		return p.HTTP2(), p.UnencryptedHTTP2()
	}
	return true, false
}
