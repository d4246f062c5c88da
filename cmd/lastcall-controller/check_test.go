package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseCheck(t *testing.T) {
	inCluster := func(string) ([]byte, error) { return []byte("lastcall-system\n"), nil }
	outside := func(string) ([]byte, error) { return nil, errors.New("no such file") }
	for _, tt := range []struct {
		name     string
		args     []string
		env      map[string]string
		readNS   func(string) ([]byte, error)
		want     checkOptions
		wantErr  string
		wantHelp bool
	}{
		{name: "defaults in a pod", readNS: inCluster,
			want: checkOptions{namespace: "lastcall-system", image: "lastcall-controller:" + version, timeout: 2 * time.Minute, interval: time.Second}},
		{name: "flags win over env", readNS: outside,
			args: []string{"--namespace=ops", "--timeout=30s"}, env: map[string]string{"LASTCALL_CHECK_TIMEOUT": "5m", "LASTCALL_CHECK_IMAGE": "ctl:1"},
			want: checkOptions{namespace: "ops", image: "ctl:1", timeout: 30 * time.Second, interval: time.Second}},
		{name: "outside a pod without --namespace", readNS: outside, wantErr: "--namespace is not set"},
		{name: "bad timeout", readNS: inCluster, args: []string{"--timeout=0s"}, wantErr: "--timeout"},
		{name: "empty image", readNS: inCluster, args: []string{"--image="}, wantErr: "--image is empty"},
		{name: "stray argument", readNS: inCluster, args: []string{"now"}, wantErr: `unexpected argument "now"`},
		{name: "help", readNS: outside, args: []string{"--help"}, wantHelp: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old := readNamespaceFile
			readNamespaceFile = tt.readNS
			defer func() { readNamespaceFile = old }()
			var usage bytes.Buffer
			o, err := parseCheck(flag.NewFlagSet(checkCommand, flag.ContinueOnError), tt.args, func(k string) string { return tt.env[k] }, &usage)
			switch {
			case tt.wantHelp:
				if !errors.Is(err, flag.ErrHelp) || !strings.Contains(usage.String(), "lastcall-controller check-webhook [flags]") {
					t.Fatalf("err %v, usage %q", err, usage.String())
				}
				return
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if o.namespace != tt.want.namespace || o.image != tt.want.image || o.timeout != tt.want.timeout || o.interval != tt.want.interval {
				t.Errorf("got %+v, want %+v", o, tt.want)
			}
		})
	}
}
