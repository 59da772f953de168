package operator

import (
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzParseConfig checks the operator's ConfigMap, which anyone with
// write access to it fills in: what is accepted is within bounds and reads
// back the same from its own form, and every refused key is named.
func FuzzParseConfig(f *testing.F) {
	f.Add("pvPerNode", "gp3", "50Gi", "dotmesh.io/storage=true", "90s", "0")
	f.Add("local", "", "", "", "", "")
	f.Add("pv-per-node", "Not_A_Class", "ten gigs", "a==b==c", "-1m", "-3")
	f.Add("pvPerNode", "a.b-c", "0.5Ki", "x in (a,b),!y,z notin (c)", "1h2m3.5s", "+7")
	f.Add("local", "x", "1e3", "a!=b", "0", "9223372036854775807")
	f.Fuzz(func(t *testing.T, mode, class, size, selector, grace, max string) {
		data := map[string]string{KeyMode: mode, KeyBackingStorageClass: class, KeyBackingSize: size,
			KeyNodeSelector: selector, KeyOrphanGrace: grace, KeyMaxAutoPVCs: max}
		cfg, err := ParseConfig(data)
		// Each refusal is one line of the error, "<key> <quoted value>: why".
		named := func(k, v string) bool {
			if err == nil {
				return false
			}
			for _, l := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(l, k+" "+strconv.Quote(v)+": ") {
					return true
				}
			}
			return false
		}
		for k, v := range data {
			_, kerr := ParseConfig(map[string]string{k: v})
			if (kerr != nil) != named(k, v) {
				t.Fatalf("%s=%q alone: %v; all together: %v", k, v, kerr, err)
			}
		}
		if err != nil {
			return
		}
		if (cfg.Mode != ModeLocal && cfg.Mode != ModePVPerNode) || cfg.Size.Sign() <= 0 || cfg.OrphanGrace < 0 || cfg.MaxAutoPVCs < 0 ||
			(cfg.StorageClass != "" && len(validation.IsDNS1123Subdomain(cfg.StorageClass)) > 0) || cfg.NodeSelector == nil {
			t.Fatalf("accepted %+v", cfg)
		}
		// The parsed values, written out, read back the same.
		again, err := ParseConfig(map[string]string{KeyMode: string(cfg.Mode), KeyBackingStorageClass: cfg.StorageClass,
			KeyBackingSize: cfg.Size.String(), KeyNodeSelector: cfg.NodeSelector.String(), KeyOrphanGrace: cfg.OrphanGrace.String(),
			KeyMaxAutoPVCs: strconv.Itoa(cfg.MaxAutoPVCs)})
		if err != nil {
			t.Fatalf("%+v written out: %v", cfg, err)
		}
		if again.Mode != cfg.Mode || again.StorageClass != cfg.StorageClass || again.Size.Cmp(cfg.Size) != 0 ||
			again.NodeSelector.String() != cfg.NodeSelector.String() || again.OrphanGrace != cfg.OrphanGrace || again.MaxAutoPVCs != cfg.MaxAutoPVCs {
			t.Fatalf("%+v reads back as %+v", cfg, again)
		}
		// The selector picks the same nodes either way.
		for _, l := range []labels.Set{{}, {"dotmesh.io/storage": "true"}, {"a": "b"}, {"x": "a", "z": "d"}} {
			if cfg.NodeSelector.Matches(l) != again.NodeSelector.Matches(l) {
				t.Fatalf("selector %q and its own form %q disagree on %v", selector, cfg.NodeSelector, l)
			}
		}
	})
}
