package main

import (
	"flag"
	"strings"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string // the flag the error must name; "" for none
	}{
		{nil, ""},
		{[]string{"--zfsd-endpoint=unix:///run/zfsd.sock"}, ""},
		// Cluster-only flags are not checked against a zfsd.
		{[]string{"--zfsd-endpoint=unix:///run/zfsd.sock", "--replication-resync=0s"}, ""},
		{[]string{"--endpoint=/csi.sock"}, "--endpoint="},
		{[]string{"--driver-name="}, "--driver-name="},
		{[]string{"--metrics-address=:x:"}, "--metrics-address="},
		{[]string{"--zfsd-endpoint=tcp://127.0.0.1:7455"}, "--zfsd-endpoint="},
		{[]string{"--namespace="}, "--namespace="},
		{[]string{"--ca-secret="}, "--ca-secret="},
		{[]string{"--config-map="}, "--config-map="},
		{[]string{"--unreachable-after=0s"}, "--unreachable-after="},
		{[]string{"--replication-resync=-1s"}, "--replication-resync="},
		{[]string{"--operator-resync=0s"}, "--operator-resync="},
		{[]string{"--cert-validity=0s"}, "--cert-validity="},
		{[]string{"--node-service-account="}, "--node-service-account="},
		{[]string{"--node-daemonset="}, "--node-daemonset="},
	} {
		var o Options
		fs := flag.NewFlagSet("dotmesh-controller", flag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := o.Validate()
		if (tc.flag == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.flag)) {
			t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.flag)
		}
	}
}
