package graceful

import (
	"context"
	"crypto/tls"
	"net/http"

	"golang.org/x/net/http2"
)

// serveHTTP2 makes golang.org/x/net/http2 serve srv's HTTP/2 connections (over TLS, and with
// prior knowledge when its Protocols enable UnencryptedHTTP2), when net/http would serve them
// with its own copy: that copy sends GOAWAY on an idle connection only from srv.Shutdown, which
// also closes the listeners, while a drain keeps serving. It goes through net/http's public hook
// for other HTTP/2 implementations, srv.TLSNextProto, as http2.ConfigureServer does, but against
// a server of its own (hook): hook.Shutdown sends GOAWAY to those connections and does nothing
// else. net/http still accepts the connections, tracks them for srv.Shutdown and srv.Close, and
// passes them the request context (BaseContext, ConnContext). The caller holds s.mu.
func (s *Server) serveHTTP2Locked(srv *http.Server) error {
	tlsH2, h2c := http2Protocols(srv)
	if !tlsH2 && !h2c {
		return nil
	}
	idle := srv.IdleTimeout
	if idle == 0 {
		idle = srv.ReadTimeout // as net/http and http2.ConfigureServer do
	}
	hook := &http.Server{}
	if err := http2.ConfigureServer(hook, &http2.Server{IdleTimeout: idle}); err != nil {
		return err
	}
	// An "h2" entry is what stops net/http from installing its own copy, which would replace
	// the h2c entry too; it is used only if the server speaks HTTP/2 over TLS.
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){"h2": hook.TLSNextProto["h2"]}
	if fn := hook.TLSNextProto[nextProtoUnencryptedHTTP2]; h2c && fn != nil {
		srv.TLSNextProto[nextProtoUnencryptedHTTP2] = fn
	}
	s.http2Hooks = append(s.http2Hooks, hook)
	return nil
}

// nextProtoUnencryptedHTTP2 is the TLSNextProto key under which net/http (Go 1.24 and later)
// hands over a connection that started with the HTTP/2 preface, without TLS.
const nextProtoUnencryptedHTTP2 = "unencrypted_http2"

// goAwayHTTP2 sends GOAWAY (NO_ERROR, the last stream it will process) on every HTTP/2
// connection that has not had one: streams in flight complete, the caller opens a new connection
// for its next request, and the connection closes once idle.
func (s *Server) goAwayHTTP2() {
	s.mu.Lock()
	hooks := s.http2Hooks
	s.mu.Unlock()
	for _, hook := range hooks {
		// Shutdown of a server that serves nothing: it runs the GOAWAY hook and returns.
		_ = hook.Shutdown(context.Background())
	}
}
