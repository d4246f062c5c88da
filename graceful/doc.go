// Package graceful gives a Go service its side of a zero-drop shutdown in Kubernetes.
//
// lastcall-prestop takes a pod out of every registry, but only the service can finish what is in
// flight, make keep-alive callers reconnect elsewhere, and tell a late caller "not processed,
// retry elsewhere". A Server runs the app's *http.Servers and its other components through
//
//	starting → running → draining → stopping → stopped
//
// Draining starts from the admin endpoint (POST /drain, which lastcall-prestop calls) or from
// the first SIGTERM/SIGINT when no hook drained the server (Config.SignalDrain). The server keeps
// serving and /readyz fails. Every HTTP/2 connection gets a GOAWAY at once, idle ones too: its
// streams in flight complete and the caller opens a new connection (graceful serves HTTP/2 with
// golang.org/x/net/http2 for that, see serveHTTP2Locked). Every HTTP/1.1 response carries
// "Connection: close"; idle HTTP/1.1 connections are left open, as closing one races a caller
// writing on it. Responses carry the DrainingHeader hint.
//
// Stopping starts on SIGTERM (or Shutdown, or the end of Run's context). In-flight requests are
// counted, and the stop waits for the last one, without polling, until a deadline derived from
// the grace period (Config.GracePeriod, Config.StopTimeout). Meanwhile a new request, typically
// on a connection its caller kept alive, is served (with Connection: close) if the time left
// before that deadline covers what it is expected to need: Config.LateRequestBudget, else the
// longest request of the last minute or so, at least DefaultLateRequestFloor. Otherwise, and
// once the in-flight requests are done, it gets 503, Retry-After and MarkerHeader: not
// processed. Status counts both (LateServed, LateRejected). Then the requests' base context is
// cancelled so handlers can roll back (Config.RollbackGrace); then listeners and connections
// close once the last responses are written; then components stop in reverse start order, each
// within its own Budget. Every step is logged, and Run returns ErrForced when a deadline cut something short.
//
// On the calling side, RetryTransport retries a marked answer on another endpoint whatever the
// method, and a connection failure before the request was written for idempotent methods; it
// also stops choosing endpoints that said they are going away. Endpoints come from a Picker:
// NewStatic, or graceful/consulpick for the passing instances of a Consul service.
// consulpick is a module of its own, so a service that does not use Consul pulls no Consul code.
//
// The admin endpoint (loopback only, DefaultAdminAddr) answers GET /status with Status, which
// lastcall-prestop reads to see traffic stop, and POST /drain.
//
// Begin and End count requests served outside an http.Handler, and Admit also times them for the
// late-request estimate: graceful/grpcgraceful serves gRPC on a Server with them.
//
// graceful is its own module (github.com/lastcall-dev/lastcall/graceful) with the standard
// library and golang.org/x/net as its only dependencies, at go 1.22, the oldest Go its code builds
// with; its tests need Go 1.24.
package graceful
