package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/agentfleet/agentfleet/gpu"
)

// PodGetter reads a pod, from a cache (NewPodCache) or the API server.
type PodGetter interface {
	Pod(namespace, name string) (*corev1.Pod, error)
}

// Publisher writes what Plan decides: the node's condition (nodes/status) and label (nodes), and
// the holders' pod conditions (pods/status), each as a patch that touches only its own entry, and
// nothing when nothing changed.
type Publisher struct {
	Client   kubernetes.Interface
	NodeName string
	Clock    clock.PassiveClock
	// HeartbeatPeriod: see PlanInput; DefaultHeartbeatPeriod when zero, never when negative.
	HeartbeatPeriod time.Duration

	// recent are the writes of the last writeSettle, which a cached read may not show yet.
	recent []write
}

// writeSettle is how long a read that does not show one of our writes is taken as stale rather than
// as someone else's change: a watch cache lags by milliseconds, and XID polls come 200 ms apart.
// A condition or label removed by someone else is set again after this.
const writeSettle = 30 * time.Second

// write is one condition or label the Publisher wrote.
type write struct {
	at    time.Time
	pod   types.NamespacedName // empty for the node
	node  *corev1.NodeCondition
	label *string
	cond  *corev1.PodCondition
}

// Publish reads the node, plans and writes. A failed write does not stop the others; their errors
// are joined. It returns what it meant to write.
func (p *Publisher) Publish(ctx context.Context, obs Observation) (Changes, error) {
	// From the API server's cache, as the kubelet reads its node: a stale read costs at most one
	// redundant or late write, corrected the next poll.
	node, err := p.Client.CoreV1().Nodes().Get(ctx, p.NodeName, metav1.GetOptions{ResourceVersion: "0"})
	if err != nil {
		return Changes{}, fmt.Errorf("reading node %s: %w", p.NodeName, err)
	}
	period := p.HeartbeatPeriod
	switch {
	case period == 0:
		period = DefaultHeartbeatPeriod
	case period < 0:
		period = 0
	}
	now := p.Clock.Now()
	in := withRecent(PlanInput{Observation: obs, Node: node, Now: now, HeartbeatPeriod: period}, p.recent)
	c := Plan(in)
	err = p.Apply(ctx, c)
	p.remember(c, now)
	return c, err
}

// remember keeps c's writes, and forgets those older than writeSettle.
func (p *Publisher) remember(c Changes, now time.Time) {
	p.recent = slices.DeleteFunc(p.recent, func(w write) bool { return now.Sub(w.at) >= writeSettle })
	if c.NodeCondition != nil {
		p.recent = append(p.recent, write{at: now, node: c.NodeCondition})
	}
	if c.NodeLabel != nil {
		p.recent = append(p.recent, write{at: now, label: c.NodeLabel})
	}
	for _, pc := range c.Pods {
		p.recent = append(p.recent, write{at: now, pod: pc.Pod, cond: &pc.Condition})
	}
}

// withRecent returns in with the writes of the last writeSettle put over what was read, so that a
// read from a cache that does not show them yet is not written again (and a transition time
// reset). Later writes come later in recent, and win.
func withRecent(in PlanInput, recent []write) PlanInput {
	if len(recent) == 0 {
		return in
	}
	if in.Node != nil {
		in.Node = in.Node.DeepCopy()
	}
	pods := maps.Clone(in.Pods)
	copied := map[types.NamespacedName]bool{}
	for _, w := range recent {
		if in.Now.Sub(w.at) >= writeSettle {
			continue
		}
		switch {
		case w.node != nil && in.Node != nil:
			setNodeCondition(in.Node, *w.node)
		case w.label != nil && in.Node != nil:
			if in.Node.Labels == nil {
				in.Node.Labels = map[string]string{}
			}
			in.Node.Labels[gpu.HealthLabel] = *w.label
		case w.cond != nil && pods[w.pod] != nil:
			if !copied[w.pod] {
				pods[w.pod], copied[w.pod] = pods[w.pod].DeepCopy(), true
			}
			setPodCondition(pods[w.pod], *w.cond)
		}
	}
	in.Pods = pods
	return in
}

func setNodeCondition(n *corev1.Node, c corev1.NodeCondition) {
	if cur := nodeCondition(n); cur != nil {
		*cur = c
		return
	}
	n.Status.Conditions = append(n.Status.Conditions, c)
}

func setPodCondition(p *corev1.Pod, c corev1.PodCondition) {
	if cur := podCondition(p); cur != nil {
		*cur = c
		return
	}
	p.Status.Conditions = append(p.Status.Conditions, c)
}

// Apply writes c.
func (p *Publisher) Apply(ctx context.Context, c Changes) error {
	var errs []error
	if c.NodeCondition != nil {
		patch := map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{*c.NodeCondition}}}
		if err := p.patch(ctx, "nodes", "", p.NodeName, types.StrategicMergePatchType, patch, "status"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NodeLabel != nil {
		patch := map[string]any{"metadata": map[string]any{"labels": map[string]string{gpu.HealthLabel: *c.NodeLabel}}}
		if err := p.patch(ctx, "nodes", "", p.NodeName, types.MergePatchType, patch); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pc := range c.Pods {
		patch := map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{pc.Condition}}}
		err := p.patch(ctx, "pods", pc.Pod.Namespace, pc.Pod.Name, types.StrategicMergePatchType, patch, "status")
		if apierrors.IsNotFound(err) {
			continue // the pod is gone: nothing to warn
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Publisher) patch(ctx context.Context, resource, namespace, name string, pt types.PatchType, patch any, subresources ...string) error {
	data, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encoding the patch of %s %s: %w", resource, name, err)
	}
	switch resource {
	case "nodes":
		_, err = p.Client.CoreV1().Nodes().Patch(ctx, name, pt, data, metav1.PatchOptions{}, subresources...)
	default:
		_, err = p.Client.CoreV1().Pods(namespace).Patch(ctx, name, pt, data, metav1.PatchOptions{}, subresources...)
	}
	if err != nil {
		what := resource
		if len(subresources) > 0 {
			what += "/" + subresources[0]
		}
		if namespace != "" {
			name = namespace + "/" + name
		}
		return fmt.Errorf("patching %s %s: %w", what, name, err)
	}
	return nil
}
