package operator

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != ModeLocal || cfg.Size.String() != "10Gi" || cfg.OrphanGrace != 10*time.Minute ||
		cfg.MaxAutoPVCs != 16 || cfg.StorageClass != "" || !cfg.NodeSelector.Empty() {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig(map[string]string{
		KeyMode: "pvPerNode", KeyBackingStorageClass: "gp3", KeyBackingSize: "50Gi",
		KeyNodeSelector: "dotmesh.io/storage=true", KeyOrphanGrace: "90s", KeyMaxAutoPVCs: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != ModePVPerNode || cfg.StorageClass != "gp3" || cfg.Size.String() != "50Gi" ||
		cfg.OrphanGrace != 90*time.Second || cfg.MaxAutoPVCs != 0 {
		t.Errorf("parsed: %+v", cfg)
	}
	if !cfg.NodeSelector.Matches(labels.Set{"dotmesh.io/storage": "true"}) || cfg.NodeSelector.Matches(labels.Set{}) {
		t.Errorf("selector %v", cfg.NodeSelector)
	}
}

func TestParseConfigRejects(t *testing.T) {
	for key, value := range map[string]string{
		KeyMode:                "pv-per-node",
		KeyBackingStorageClass: "Not_A_Class",
		KeyBackingSize:         "ten gigs",
		KeyNodeSelector:        "a==b==c",
		KeyOrphanGrace:         "-1m",
		KeyMaxAutoPVCs:         "-3",
	} {
		_, err := ParseConfig(map[string]string{key: value})
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%q: error %v, want one naming the key", key, value, err)
		}
	}
	_, err := ParseConfig(map[string]string{KeyBackingSize: "0", KeyOrphanGrace: "soon"})
	if err == nil || !strings.Contains(err.Error(), KeyBackingSize) || !strings.Contains(err.Error(), KeyOrphanGrace) {
		t.Errorf("two bad keys: error %v, want both named", err)
	}
}
