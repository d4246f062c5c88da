// Package grpcgraceful serves gRPC under a graceful.Server, so that a gRPC service gets the same
// zero-drop stop as an HTTP one: its calls count in the server's in-flight count, last-request
// time and admin /status (which lastcall-prestop reads), its callers move elsewhere while it
// drains, and a call that comes too late is answered "not processed".
//
//	g, _ := graceful.New(graceful.Config{GracePeriod: 10 * time.Second})
//	s, _ := grpcgraceful.New(g, grpcgraceful.Config{Addr: ":50051"})
//	pb.RegisterOrdersServer(s, impl) // s is a grpc.ServiceRegistrar
//	err := g.Run(ctx)
//
// What happens in each state of the graceful.Server:
//   - running: the standard health service (grpc.health.v1, registered by New) answers SERVING
//     for "" and every registered service.
//   - draining: health answers NOT_SERVING, and every connection gets a GOAWAY, idle ones too:
//     clients open new connections for new calls (through their resolver, elsewhere once the
//     registries dropped this instance) while the calls in flight finish. The GOAWAY is
//     grpc-go's two-step one (a first GOAWAY that covers every stream, a PING, then the last
//     stream id), which closes the race of grpc/grpc-go#1387. A connection opened while draining
//     gets its GOAWAY once its first call ended, as an HTTP/1.1 connection gets Connection: close.
//   - stopping: the listener closes (a gRPC client sends no call on a connection before the
//     server's SETTINGS, so a refused connection costs none, and it makes round_robin pick
//     another endpoint), and every connection gets GOAWAY. A call that still arrives on one
//     follows graceful's rule for late requests: while the stop still waits for calls in flight,
//     it is served if it can finish before the stop's deadline (graceful.Config.LateRequestBudget;
//     unary calls' durations feed the measured estimate, streams' do not); otherwise it is
//     answered UNAVAILABLE with the trailer MarkerKey ("not processed"), after its connection's
//     GOAWAY was written, so that Retry sends it elsewhere whatever the method. The stop waits
//     for the calls in flight, late ones included, like for HTTP requests.
//   - then, as a graceful.Component after the HTTP servers: GracefulStop runs within
//     Config.Budget, then Stop cuts what is left (grpc/grpc-go#2448).
//
// grpc-go can drain a connection only by stopping the grpc.Server that serves it (GracefulStop),
// so a Server is a succession of grpc.Servers on one listener: a drain stops the current one and a
// fresh one, built from the same options and services, takes the connections that come next.
//
// On the calling side, Retry's interceptors retry on the same ClientConn, whose balancer picks
// again, a call answered with MarkerKey and a call that failed before it reached any connection.
//
// grpcgraceful is a module of its own, so that services without gRPC pull no gRPC code.
package grpcgraceful
