//go:build !go1.24

package graceful

import "net/http"

// http2Protocols leaves HTTP/2 to net/http before Go 1.24: without Server.Protocols there is no
// h2c, and handing HTTP/2 over TLS to another implementation would need its ALPN setup too.
// Idle HTTP/2 connections then get their GOAWAY at the stop, from srv.Shutdown.
func http2Protocols(*http.Server) (tlsH2, h2c bool) { return false, false }
