package operator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// Leader election timing: a new leader takes over within about 15 s of the
// old one dying, and a leader that cannot renew for 10 s stops first.
const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
)

// DefaultResync is how often the leader reads the cluster and plans.
const DefaultResync = 2 * time.Second

// Options configure Run.
type Options struct {
	// Namespace holds the ConfigMap, the Lease, backing PVCs and pool pods.
	Namespace string
	// ConfigMap is the configuration's name (DefaultConfigMap if empty).
	ConfigMap string
	// PoolImage runs in pool pods (DefaultPoolImage if empty).
	PoolImage string
	// Resync is the time between passes (DefaultResync if zero).
	Resync time.Duration
	// Identity holds the Lease; the host name and a random suffix if empty,
	// so a restarted pod with the same name is not taken for its former self.
	Identity string
}

func (o Options) withDefaults() (Options, error) {
	if o.Namespace == "" {
		return o, errors.New("operator: no namespace")
	}
	if o.ConfigMap == "" {
		o.ConfigMap = DefaultConfigMap
	}
	if o.PoolImage == "" {
		o.PoolImage = DefaultPoolImage
	}
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return o, fmt.Errorf("operator: leader election identity: %w", err)
		}
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		o.Identity = host + "_" + hex.EncodeToString(b)
	}
	return o, nil
}

// Run keeps backing PVCs and pool pods while it holds the Lease, and stands
// by while another replica does. It returns when ctx ends, releasing the
// Lease, or with an error for options it cannot use.
func Run(ctx context.Context, cs kubernetes.Interface, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	op := newOperator(cs, opts)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: LeaseName, Namespace: opts.Namespace},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: opts.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            LeaseName,
			LeaseDuration:   leaseDuration,
			RenewDeadline:   renewDeadline,
			RetryPeriod:     retryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: op.lead,
				OnStoppedLeading: func() {
					klog.InfoS("operator is not leading", "lease", LeaseName, "identity", opts.Identity)
				},
			},
		})
		if err != nil {
			return fmt.Errorf("operator: leader election: %w", err)
		}
		// Run returns when leadership is lost or ctx ends; a lost term
		// is followed by standing for the next one.
		le.Run(ctx)
	}
	// Wait out a pass still in flight, so the caller may exit.
	op.leading.Lock()
	defer op.leading.Unlock()
	return nil
}

// operator is the runtime: it reads the configuration, observes, plans and
// applies, once per pass.
type operator struct {
	cs       kubernetes.Interface
	opts     Options
	warnings *warnings
	applier  *applier
	now      func() time.Time
	newName  func() string

	// leading is held by the leader's loop. The elector starts a term's
	// loop in a goroutine and cancels it when the term ends, without
	// waiting; the next term's loop waits here, so two never overlap.
	leading sync.Mutex

	// good is the last configuration that parsed, and goodVersion the
	// ConfigMap resourceVersion it came from ("" when there was none).
	good        *Config
	goodVersion string
	// missing remembers that the ConfigMap was not there, to say so once.
	missing bool
}

func newOperator(cs kubernetes.Interface, opts Options) *operator {
	w := newWarnings(cs)
	return &operator{
		cs:       cs,
		opts:     opts,
		warnings: w,
		applier:  newApplier(cs, opts.Namespace, opts.PoolImage, w),
		now:      time.Now,
		newName:  RandomPVCName,
	}
}

// lead runs passes until ctx ends (the term is over).
func (o *operator) lead(ctx context.Context) {
	o.leading.Lock()
	defer o.leading.Unlock()
	klog.InfoS("operator is leading", "lease", LeaseName, "identity", o.opts.Identity, "namespace", o.opts.Namespace)
	t := time.NewTicker(o.opts.Resync)
	defer t.Stop()
	lastErr := ""
	for ctx.Err() == nil {
		// Reading the cluster failing the same way again is not news.
		if err := o.pass(ctx); err != nil && ctx.Err() == nil {
			if err.Error() != lastErr {
				klog.ErrorS(err, "operator pass")
			}
			lastErr = err.Error()
		} else {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// pass reads the configuration and the cluster, plans, and applies.
func (o *operator) pass(ctx context.Context) error {
	cfg, err := o.config(ctx)
	if err != nil {
		o.warnings.abandonPass()
		return err
	}
	if cfg == nil || cfg.Mode != ModePVPerNode {
		o.warnings.endPass()
		return nil
	}
	s, err := observe(ctx, o.cs, o.opts.Namespace)
	if err != nil {
		o.warnings.abandonPass()
		return err
	}
	// Each failed action is logged by the applier, as often as is news;
	// the pass itself has not failed.
	_ = o.applier.apply(ctx, *cfg, s, Plan(*cfg, s, o.now(), o.newName))
	if err := detachFromGoneNodes(ctx, o.cs, s); err != nil {
		klog.ErrorS(err, "detaching moved backing volumes from deleted nodes")
	}
	o.warnings.endPass()
	return nil
}

// config reads the ConfigMap. A missing one means the defaults (local
// mode). A bad one is reported on the ConfigMap and the last good
// configuration stays in force; nil means there is none.
func (o *operator) config(ctx context.Context) (*Config, error) {
	cm, err := o.cs.CoreV1().ConfigMaps(o.opts.Namespace).Get(ctx, o.opts.ConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if !o.missing {
			klog.InfoS("no operator ConfigMap; using the defaults (local mode, nothing to do)",
				"configMap", o.opts.ConfigMap, "namespace", o.opts.Namespace)
		}
		o.missing = true
		cfg := DefaultConfig()
		o.good, o.goodVersion = &cfg, ""
		return o.good, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s: %w", o.opts.Namespace, o.opts.ConfigMap, err)
	}
	o.missing = false
	if o.goodVersion != "" && o.goodVersion == cm.ResourceVersion {
		return o.good, nil
	}
	cfg, err := ParseConfig(cm.Data)
	if err != nil {
		o.reportBad(ctx, cm, err)
		return o.good, nil
	}
	klog.InfoS("operator configuration", "configMap", cm.Name, "mode", cfg.Mode, "storageClass", cfg.StorageClass,
		"size", cfg.Size.String(), "nodeSelector", cfg.NodeSelector.String(), "orphanGrace", cfg.OrphanGrace, "maxAutoPVCs", cfg.MaxAutoPVCs)
	o.good, o.goodVersion = &cfg, cm.ResourceVersion
	return o.good, nil
}

func (o *operator) reportBad(ctx context.Context, cm *corev1.ConfigMap, err error) {
	keeping := "the last good configuration stays in force"
	if o.good == nil {
		keeping = "the operator does nothing until it is fixed"
	}
	msg := fmt.Sprintf("invalid operator configuration: %v; %s", err, keeping)
	if o.warnings.warn(ctx, configMapRef(cm), ReasonInvalidConfig, msg) {
		klog.ErrorS(err, "invalid operator configuration", "configMap", cm.Name, "namespace", cm.Namespace, "keeping", keeping)
	}
}
