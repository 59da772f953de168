package main

import (
	"flag"
	"strings"
	"testing"
	"time"
)

// parsed returns the options the flags give, as main parses them.
func parsed(t *testing.T, inPod bool, args ...string) Options {
	t.Helper()
	o := Options{InPod: inPod}
	fs := flag.NewFlagSet("dotmesh-node", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOptionsDefaults(t *testing.T) {
	for _, tc := range []struct {
		inPod bool
		args  []string
		mode  mode
	}{
		{false, nil, modeSplit},
		{false, []string{"--standalone"}, modeStandalone},
		{true, []string{"--standalone"}, modeStandalone},
		{true, nil, modeCluster},
		{false, []string{"--kubeconfig=/etc/kube.conf"}, modeCluster},
	} {
		o := parsed(t, tc.inPod, tc.args...)
		if err := o.Validate(); err != nil {
			t.Errorf("%v: defaults refused: %v", tc.args, err)
		}
		if o.Mode() != tc.mode {
			t.Errorf("%v (in a pod: %v): mode %s, want %s", tc.args, tc.inPod, o.Mode(), tc.mode)
		}
	}
	o := parsed(t, false, "--data-dir=/srv/dots", "--pool-size=2Gi", "--default-volume-size=64Mi", "--allowed-target-dirs=/a, /b")
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.poolBytes != 2<<30 || o.defaultCapacity != 64<<20 || o.dataDir != "/srv/dots" || o.PoolName != DefaultPoolName("/srv/dots") ||
		len(o.allowedDirs) != 2 || o.allowedDirs[1] != "/b" {
		t.Errorf("parsed %+v", o)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		inPod bool
		args  []string
		flag  string // the flag the error must name
	}{
		{false, []string{"--endpoint=http://x"}, "--endpoint="},
		{false, []string{"--endpoint="}, "--endpoint="},
		{false, []string{"--node-id="}, "--node-id="},
		{false, []string{"--pool-size=lots"}, "--pool-size="},
		{false, []string{"--pool-size=-1Gi"}, "--pool-size="},
		{false, []string{"--default-volume-size=1Q"}, "--default-volume-size="},
		{false, []string{"--allowed-target-dirs=,"}, "--allowed-target-dirs="},
		{false, []string{"--allowed-target-dirs=var/lib/kubelet"}, "--allowed-target-dirs="},
		{false, []string{"--pool-check-interval=0s"}, "--pool-check-interval="},
		{false, []string{"--zfsd-endpoint=tcp://0.0.0.0:7000"}, "--zfsd-endpoint="},
		{false, []string{"--kubelet-registration-path=csi.sock"}, "--kubelet-registration-path="},
		{false, []string{"--metrics-address=9821"}, "--metrics-address="},
		{false, []string{"--pool-pods"}, "--pool-pods="},
		{true, []string{"--standalone", "--pool-pods"}, "--pool-pods="},
		{true, []string{"--zfsd-listen=7455"}, "--zfsd-listen="},
		{true, []string{"--zfsd-advertise=10.0.0.1"}, "--zfsd-advertise="},
		{true, []string{"--tls-ca-file=/ca.crt"}, "--tls-ca-file="},
		{true, []string{"--heartbeat=0s"}, "--heartbeat="},
		{true, []string{"--failover-grace=-1m"}, "--failover-grace="},
		{true, []string{"--unreachable-after=2s"}, "--unreachable-after="},
		{true, []string{"--namespace="}, "--namespace="},
		{true, []string{"--pool-pods", "--kubelet-dir=kubelet"}, "--kubelet-dir="},
	} {
		o := parsed(t, tc.inPod, tc.args...)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: error %v does not name %s", tc.args, err, tc.flag)
		}
	}
	// Cluster-only flags are not checked outside cluster mode.
	o := parsed(t, false, "--heartbeat=0s")
	if err := o.Validate(); err != nil {
		t.Errorf("--heartbeat=0s outside cluster mode: %v", err)
	}
}

func TestHoldOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{nil, ""},
		{[]string{"--dir=pool"}, "--dir="},
		{[]string{"--poll=0s"}, "--poll="},
	} {
		var o HoldOptions
		fs := flag.NewFlagSet("hold-pool", flag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := o.Validate()
		if (tc.flag == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.flag)) {
			t.Errorf("%v: %v", tc.args, err)
		}
		if tc.flag == "" && (o.Dir != "/pool" || o.Poll != 500*time.Millisecond) {
			t.Errorf("defaults %+v", o)
		}
	}
}
