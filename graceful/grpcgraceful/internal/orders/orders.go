// Package orders is the small gRPC service of grpcgraceful's tests and example, written without
// generated code: requests and answers are wrapperspb.StringValue.
package orders

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names of the service and its methods.
const (
	Service      = "lastcall.example.Orders"
	PlaceMethod  = "/" + Service + "/Place"
	FollowMethod = "/" + Service + "/Follow"
)

// Server is the service: Place books an order (unary), Follow streams an order's updates.
type Server interface {
	Place(ctx context.Context, item *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	Follow(item *wrapperspb.StringValue, stream grpc.ServerStreamingServer[wrapperspb.StringValue]) error
}

// ServiceDesc describes the service as protoc-gen-go-grpc would.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: Service,
	HandlerType: (*Server)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Place", Handler: placeHandler}},
	Streams:     []grpc.StreamDesc{{StreamName: "Follow", Handler: followHandler, ServerStreams: true}},
}

// Register registers srv on r.
func Register(r grpc.ServiceRegistrar, srv Server) { r.RegisterService(&ServiceDesc, srv) }

func placeHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	call := func(ctx context.Context, req any) (any, error) {
		return srv.(Server).Place(ctx, req.(*wrapperspb.StringValue))
	}
	if interceptor == nil {
		return call(ctx, in)
	}
	return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: PlaceMethod}, call)
}

func followHandler(srv any, stream grpc.ServerStream) error {
	in := new(wrapperspb.StringValue)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	return srv.(Server).Follow(in, &grpc.GenericServerStream[wrapperspb.StringValue, wrapperspb.StringValue]{ServerStream: stream})
}

// Place calls Place on cc.
func Place(ctx context.Context, cc grpc.ClientConnInterface, item string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, PlaceMethod, wrapperspb.String(item), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// Follow opens Follow on cc.
func Follow(ctx context.Context, cc grpc.ClientConnInterface, item string, opts ...grpc.CallOption) (grpc.ServerStreamingClient[wrapperspb.StringValue], error) {
	stream, err := cc.NewStream(ctx, &ServiceDesc.Streams[0], FollowMethod, opts...)
	if err != nil {
		return nil, err
	}
	x := &grpc.GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]{ClientStream: stream}
	if err := x.SendMsg(wrapperspb.String(item)); err != nil {
		return nil, err
	}
	if err := x.CloseSend(); err != nil {
		return nil, err
	}
	return x, nil
}
