// Package workrpc is the e2e app's gRPC service, shared by the app and the load generator and
// written without generated code: one unary method, Do, whose request and answer are
// wrapperspb.StringValue (the standard proto codec, no .proto file to compile). Do is the gRPC
// twin of the app's HTTP "/": it takes the app's --work and counts what it processed.
package workrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names of the service and its method.
const (
	Service  = "lastcall.e2e.Work"
	DoMethod = "/" + Service + "/Do"
)

// ProcessedByKey is the header metadata naming the pod that processed a call, as the HTTP
// answers' X-Processed-By.
const ProcessedByKey = "x-processed-by"

// Server is the service.
type Server interface {
	// Do does one unit of work and answers how many the server processed so far.
	Do(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

// ServiceDesc describes the service as protoc-gen-go-grpc would.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: Service,
	HandlerType: (*Server)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Do", Handler: doHandler}},
}

// Register registers srv on r.
func Register(r grpc.ServiceRegistrar, srv Server) { r.RegisterService(&ServiceDesc, srv) }

func doHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	call := func(ctx context.Context, req any) (any, error) {
		return srv.(Server).Do(ctx, req.(*wrapperspb.StringValue))
	}
	if interceptor == nil {
		return call(ctx, in)
	}
	return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: DoMethod}, call)
}

// Do calls Do on cc with payload and returns the answer.
func Do(ctx context.Context, cc grpc.ClientConnInterface, payload string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, DoMethod, wrapperspb.String(payload), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}
