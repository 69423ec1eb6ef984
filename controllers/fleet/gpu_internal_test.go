package fleet

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/gpunode"
	"github.com/agentfleet/agentfleet/gpu"
)

// The index of pods by node is only looked up here, which a fake client does faithfully.
func TestNodeToFleets(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	pod := func(ns, name, fleet, node string, gpus int64) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "ray-worker"}}}}
		if fleet != "" {
			p.Labels[v1alpha1.LabelFleet] = fleet
		}
		if gpus > 0 {
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{gpu.Resource: *resource.NewQuantity(gpus, resource.DecimalSI)}
		}
		return p
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithIndex(&corev1.Pod{}, podNodeIndex, indexPodNode).WithObjects(
		pod("team", "a-0", "a", "gpu-1", 1), pod("team", "a-1", "a", "gpu-1", 1), // one request for two workers
		pod("other", "a-0", "a", "gpu-1", 2),    // the same name in another namespace is another fleet
		pod("team", "cpu-0", "cpu", "gpu-1", 0), // no GPU: a node fault is nothing to it
		pod("team", "b-0", "b", "gpu-2", 1),
		pod("team", "stray", "", "gpu-1", 1),
	).Build()
	r := &Reconciler{Client: c}
	got := r.nodeToFleets(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-1"}})
	slices.SortFunc(got, func(a, b reconcile.Request) int { return strings.Compare(a.String(), b.String()) })
	want := []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: "other", Name: "a"}}, {NamespacedName: client.ObjectKey{Namespace: "team", Name: "a"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestNodeGPUHealthChanged(t *testing.T) {
	r := &Reconciler{GPUFaultConditions: gpunode.DefaultFaultConditionList()}
	p := r.nodeGPUHealthChanged()
	node := func(mutate ...func(*corev1.Node)) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-1"}, Status: corev1.NodeStatus{
			Capacity:   corev1.ResourceList{gpu.Resource: resource.MustParse("8")},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Unix(1, 0)}},
		}}
		for _, m := range mutate {
			m(n)
		}
		return n
	}
	heartbeat := func(n *corev1.Node) { n.Status.Conditions[0].LastHeartbeatTime = metav1.Unix(11, 0) }
	xid := func(n *corev1.Node) {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: "XidCriticalError", Status: corev1.ConditionTrue})
	}
	degraded := func(n *corev1.Node) { n.Labels = map[string]string{gpu.HealthLabel: gpu.HealthDegraded} }
	for name, tc := range map[string]struct {
		old, cur *corev1.Node
		want     bool
	}{
		"a kubelet heartbeat":          {node(), node(heartbeat), false},
		"a fault appears":              {node(), node(xid), true},
		"a fault clears":               {node(xid), node(), true},
		"the fault stays, a heartbeat": {node(xid), node(xid, heartbeat), false},
		"the agent labels it degraded": {node(), node(degraded), false}, // its pods carry what the fleets read
	} {
		t.Run(name, func(t *testing.T) {
			if got := p.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.cur}); got != tc.want {
				t.Errorf("Update = %v, want %v", got, tc.want)
			}
		})
	}
	if !p.Create(event.CreateEvent{Object: node(xid)}) || p.Create(event.CreateEvent{Object: node()}) {
		t.Error("Create: want true for a faulty node only")
	}
}
