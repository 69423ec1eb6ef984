package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/utils/clock"
)

// Source is the NVML side: gpu/collector's Collector, through an adapter that converts its Report.
type Source interface {
	// WaitXIDs waits up to timeout for an XID event and says whether one came.
	WaitXIDs(timeout time.Duration) bool
	Poll() Report
}

// HolderLister says which containers hold which GPU (PodResources).
type HolderLister interface {
	Holders(ctx context.Context) (map[string][]PodRef, error)
}

// MinPollGap is the least time between two polls: an XID storm wakes the loop at every event, and
// is read in polls at most this often.
const MinPollGap = 200 * time.Millisecond

// Agent is the loop of the GPU health agent: wait for an XID or the poll interval, poll, publish.
type Agent struct {
	NodeName     string
	Source       Source
	Holders      HolderLister
	Pods         PodGetter
	Publisher    *Publisher
	Metrics      *Metrics
	PollInterval time.Duration
	Clock        clock.Clock
	Log          logr.Logger

	// lastHolders is the latest answer of the pod-resources API, kept while it fails.
	lastHolders map[string][]PodRef
	// lastErrors are the collection errors logged last, so that each is logged when it starts.
	lastErrors []string
}

// Run polls until ctx is done. A poll starts when the interval has passed since the previous one,
// or at once when an XID event arrives (at most every MinPollGap). An NVML wait is not interrupted:
// Run returns within one poll interval after ctx is done.
func (a *Agent) Run(ctx context.Context) {
	next := a.Clock.Now()
	var last time.Time
	for ctx.Err() == nil {
		if wait := next.Sub(a.Clock.Now()); wait > 0 && !a.Source.WaitXIDs(wait) {
			// No XID: the wait timed out, or XID events cannot be read and it returned at once.
			a.sleep(ctx, next.Sub(a.Clock.Now()))
		}
		if !last.IsZero() {
			a.sleep(ctx, MinPollGap-a.Clock.Since(last))
		}
		if ctx.Err() != nil {
			break
		}
		last = a.Clock.Now()
		a.PollOnce(ctx)
		if now := a.Clock.Now(); !next.After(now) {
			next = now.Add(a.PollInterval)
		}
	}
}

func (a *Agent) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := a.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C():
	}
}

// PollOnce polls the GPUs, finds their holders and publishes.
func (a *Agent) PollOnce(ctx context.Context) Changes {
	obs := a.Observe(ctx)
	if a.Metrics != nil {
		a.Metrics.Update(obs)
	}
	c, err := a.Publisher.Publish(ctx, obs)
	if err != nil {
		a.Log.Error(err, "Publishing GPU health", "node", a.NodeName)
	}
	if c.NodeCondition != nil {
		a.Log.Info("GPU health published", "node", a.NodeName, "status", c.NodeCondition.Status,
			"reason", c.NodeCondition.Reason, "message", c.NodeCondition.Message)
	}
	for _, pc := range c.Pods {
		a.Log.Info("Pod GPU condition published", "pod", pc.Pod.String(), "status", pc.Condition.Status,
			"reason", pc.Condition.Reason, "message", pc.Condition.Message)
	}
	return c
}

// Observe polls the GPUs and reads who holds them.
func (a *Agent) Observe(ctx context.Context) Observation {
	r := a.Source.Poll()
	if !slices.Equal(r.Errors, a.lastErrors) {
		for _, e := range r.Errors {
			a.Log.Info("GPU collection error", "node", a.NodeName, "error", e)
		}
		a.lastErrors = r.Errors
	}
	if a.Holders != nil {
		h, err := a.Holders.Holders(ctx)
		if err != nil {
			a.Log.Error(err, "Reading which pods hold the GPUs; using the previous answer", "node", a.NodeName)
		} else {
			a.lastHolders = h
		}
	}
	obs := Observation{NodeName: a.NodeName, Report: r, Holders: a.lastHolders, Pods: map[types.NamespacedName]*corev1.Pod{}}
	for _, refs := range a.lastHolders {
		for _, ref := range refs {
			k := ref.Key()
			if _, done := obs.Pods[k]; done || a.Pods == nil {
				continue
			}
			pod, err := a.Pods.Pod(ref.Namespace, ref.Name)
			if err != nil {
				pod = nil // not in the cache yet: its condition waits for the next poll
			}
			obs.Pods[k] = pod
		}
	}
	return obs
}

// PodCache is a PodGetter over an informer of the pods on one node, as the kubelet watches them.
type PodCache struct {
	lister corelisters.PodLister
}

// NewPodCache starts an informer of the pods bound to node, until ctx is done, and waits up to
// timeout for its first list.
func NewPodCache(ctx context.Context, client kubernetes.Interface, node string, timeout time.Duration) (*PodCache, error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}))
	lister := f.Core().V1().Pods().Lister()
	f.Start(ctx.Done())
	wait, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for typ, ok := range f.WaitForCacheSync(wait.Done()) {
		if !ok {
			return nil, fmt.Errorf("listing the pods on node %s (%v) within %s: may the agent list and watch pods?", node, typ, timeout)
		}
	}
	return &PodCache{lister: lister}, nil
}

// Pod returns the pod from the cache.
func (c *PodCache) Pod(namespace, name string) (*corev1.Pod, error) {
	return c.lister.Pods(namespace).Get(name)
}
