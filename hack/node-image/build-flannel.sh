#!/usr/bin/env bash
# Builds a static flanneld from github.com/flannel-io/flannel through the Go module proxy, cached
# by version under $LASTCALL_CACHE/flanneld/VERSION/. Prints the binary's path.
#
# flannel's main package links its tencent-vpc backend, whose Tencent Cloud SDK modules the proxy
# does not serve ("This module version is not available"). A wrapper module replaces them by
# stubs that only compile: the tencent-vpc backend then fails when selected; host-gw, vxlan and
# the other backends are untouched.
#
# On amd64 flannel's udp backend is cgo: the binary is linked statically with gcc and glibc's
# libc.a (Debian: gcc, libc6-dev), as flannel's own Makefile does.
#
# Usage: hack/node-image/build-flannel.sh [--help]
# Env:   FLANNEL_VERSION, FLANNEL_GENPROTO_VERSION (hack/versions.env)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

only_help_flag "$@"
out=$LASTCALL_CACHE/flanneld/$FLANNEL_VERSION/flanneld
if [[ -x $out ]]; then echo "$out"; exit 0; fi

work=$LASTCALL_CACHE/src/flannel-$FLANNEL_VERSION
sdk=github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud
rm -rf "$work"
mkdir -p "$work/stub/common/errors" "$work/stub/vpc/v20170312"
cat >"$work/go.mod" <<MOD
module lastcall.local/flannelbuild

go 1.26.0

require github.com/flannel-io/flannel $FLANNEL_VERSION

replace $sdk/common => ./stub/common

replace $sdk/vpc => ./stub/vpc
MOD
cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/flannel-io/flannel/pkg/backend/hostgw"
GO
printf 'module %s/common\n\ngo 1.21\n' "$sdk" >"$work/stub/common/go.mod"
cat >"$work/stub/common/common.go" <<'GO'
// Package common stubs the part of the Tencent Cloud SDK flannel's tencent-vpc backend compiles against.
package common

func StringPtr(s string) *string { return &s }

func StringPtrs(s []string) []*string {
	out := make([]*string, len(s))
	for i := range s {
		out[i] = &s[i]
	}
	return out
}

func BoolPtr(b bool) *bool { return &b }
GO
cat >"$work/stub/common/errors/errors.go" <<'GO'
// Package errors stubs the Tencent Cloud SDK's error type.
package errors

type TencentCloudSDKError struct{ Code, Message, RequestId string }

func (e *TencentCloudSDKError) Error() string { return e.Code + ": " + e.Message }
GO
printf 'module %s/vpc\n\ngo 1.21\n' "$sdk" >"$work/stub/vpc/go.mod"
cat >"$work/stub/vpc/v20170312/vpc.go" <<'GO'
// Package v20170312 stubs the Tencent Cloud VPC client: every call fails.
package v20170312

import "errors"

var errStub = errors.New("tencent-vpc backend is not available in this build (Tencent Cloud SDK stubbed)")

type Client struct{}

func NewClientWithSecretId(secretID, secretKey, region string) (*Client, error) { return &Client{}, nil }

type Filter struct {
	Name   *string
	Values []*string
}

type Route struct {
	DestinationCidrBlock *string
	GatewayType          *string
	GatewayId            *string
	RouteId              *uint64
	RouteType            *string
	Enabled              *bool
}

type RouteTable struct {
	RouteTableId *string
	RouteSet     []*Route
}

type DescribeRouteTablesRequest struct{ Filters []*Filter }

type DescribeRouteTablesResponseParams struct{ RouteTableSet []*RouteTable }

type DescribeRouteTablesResponse struct {
	Response *DescribeRouteTablesResponseParams
}

type RoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

type DeleteRoutesRequest = RoutesRequest
type CreateRoutesRequest = RoutesRequest

type RoutesResponse struct{}

func NewDescribeRouteTablesRequest() *DescribeRouteTablesRequest { return &DescribeRouteTablesRequest{} }
func NewDeleteRoutesRequest() *DeleteRoutesRequest               { return &RoutesRequest{} }
func NewCreateRoutesRequest() *CreateRoutesRequest               { return &RoutesRequest{} }

func (*Client) DescribeRouteTables(*DescribeRouteTablesRequest) (*DescribeRouteTablesResponse, error) {
	return nil, errStub
}
func (*Client) DeleteRoutes(*DeleteRoutesRequest) (*RoutesResponse, error) { return nil, errStub }
func (*Client) CreateRoutes(*CreateRoutesRequest) (*RoutesResponse, error) { return nil, errStub }
GO

command -v gcc >/dev/null && [[ -n $(gcc -print-file-name=libc.a 2>/dev/null | grep /) && -f $(gcc -print-file-name=libc.a) ]] ||
  die "flanneld needs gcc and a static libc to link: apt-get install gcc libc6-dev, then run: hack/node-image/build-flannel.sh"
cd "$work"
log "resolving flannel $FLANNEL_VERSION dependencies"
go_mod_tidy "$work" flannel
# an old dependency pulls in the pre-split google.golang.org/genproto, which makes
# googleapis/api ambiguous: require a later version of it, without those packages
if ! got=$(GOFLAGS=-mod=mod go get "google.golang.org/genproto@$FLANNEL_GENPROTO_VERSION" 2>&1); then
  grep -v '^go: downloading' <<<"$got" >&2 || true
  die "go get google.golang.org/genproto@$FLANNEL_GENPROTO_VERSION failed in $work (above): fix FLANNEL_GENPROTO_VERSION in hack/versions.env, then run: hack/node-image/build-flannel.sh"
fi
log "building flanneld $FLANNEL_VERSION (static)"
start=$SECONDS
mkdir -p "$(dirname "$out")"
CGO_ENABLED=1 GOFLAGS=-mod=mod go build -trimpath -tags netgo,osusergo \
  -ldflags "-s -w -linkmode external -extldflags -static -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
  -o "$out.tmp" github.com/flannel-io/flannel ||
  die "go build of flanneld $FLANNEL_VERSION failed (above) in $work: fix the wrapper module in hack/node-image/build-flannel.sh, then run it again"
if command -v file >/dev/null && ! file "$out.tmp" | grep -q 'statically linked'; then
  rm -f "$out.tmp"
  die "flanneld is not statically linked: check gcc -print-file-name=libc.a finds a static libc (apt-get install libc6-dev), then run: hack/node-image/build-flannel.sh"
fi
mv "$out.tmp" "$out"
log "built flanneld $FLANNEL_VERSION in $((SECONDS - start)) s"
echo "$out"
