package cluster

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RestConfig loads a kubeconfig file, or the in-cluster config when path is
// empty. client-go's default of 5 requests a second would put a 200 ms wait
// between the handful of reads and compare-and-swaps a handoff makes; the
// view's traffic is small and bursty, so it gets a higher limit.
func RestConfig(path string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}
