package fleet

import (
	"context"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// builderIndexer registers indexes on a fake client's builder, which looks them up as the cache does.
type builderIndexer struct{ b *fake.ClientBuilder }

func (i builderIndexer) IndexField(_ context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	i.b.WithIndex(obj, field, fn)
	return nil
}

// A fleet's Lists go through the indexes of its children: they find its own objects, in its own
// namespace, and nothing of a fleet of the same name elsewhere or of another RayCluster.
func TestChildrenAreListedByTheirIndexes(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, rayv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	meta := func(ns, name, fleet string, extra ...string) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}}
		if fleet != "" {
			m.Labels[v1alpha1.LabelFleet] = fleet
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m.Labels[extra[i]] = extra[i+1]
		}
		return m
	}
	pod := func(ns, name, fleet, cluster, group string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: meta(ns, name, fleet, rayutils.RayClusterLabelKey, cluster, rayGroupLabel, group)}
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		pod("team", "a-head", "a", "a", "headgroup"),
		pod("team", "a-w1", "a", "a", v1alpha1.WorkerGroup),
		pod("team", "a-c1", "a", "a", v1alpha1.CanaryGroup),
		pod("team", "a-preview-w1", "a", "a-preview", v1alpha1.WorkerGroup),
		pod("team", "b-w1", "b", "b", v1alpha1.WorkerGroup),
		pod("other", "a-w1", "a", "a", v1alpha1.WorkerGroup),
		&coordinationv1.Lease{ObjectMeta: meta("team", "a-w1", "a")},
		&coordinationv1.Lease{ObjectMeta: meta("team", "b-w1", "b")},
		&coordinationv1.Lease{ObjectMeta: meta("other", "a-w1", "a")},
		&rayv1.RayCluster{ObjectMeta: meta("team", "a", "a")},
		&rayv1.RayCluster{ObjectMeta: meta("team", "a-preview", "a")},
		&rayv1.RayCluster{ObjectMeta: meta("team", "b", "b")},
		&rayv1.RayCluster{ObjectMeta: meta("team", "stray", "")},
		&rayv1.RayJob{ObjectMeta: meta("team", "a-nightly-1", "a")},
		&rayv1.RayJob{ObjectMeta: meta("other", "a-nightly-1", "a")},
	)
	ctx := context.Background()
	if err := indexChildren(ctx, builderIndexer{b}); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Client: b.Build()}

	got := map[string][]string{}
	workers, err := r.workerPods(ctx, &rayv1.RayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range workers {
		got["workers of RayCluster a"] = append(got["workers of RayCluster a"], p.Name)
	}
	for kind, list := range map[string]client.ObjectList{"pods": &corev1.PodList{}, "leases": &coordinationv1.LeaseList{},
		"rayclusters": &rayv1.RayClusterList{}, "rayjobs": &rayv1.RayJobList{}} {
		if err := r.List(ctx, list, client.InNamespace("team"), client.MatchingFields{fleetIndex: "a"}); err != nil {
			t.Fatalf("listing %s of fleet a: %v", kind, err)
		}
		items, err := metaNames(list)
		if err != nil {
			t.Fatal(err)
		}
		got[kind+" of fleet a"] = items
	}
	want := map[string][]string{
		"workers of RayCluster a": {"a-c1", "a-w1"},
		"pods of fleet a":         {"a-c1", "a-head", "a-preview-w1", "a-w1"},
		"leases of fleet a":       {"a-w1"},
		"rayclusters of fleet a":  {"a", "a-preview"},
		"rayjobs of fleet a":      {"a-nightly-1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("objects listed by index (-want +got):\n%s", diff)
	}
}

// metaNames are the names of a list's items, sorted.
func metaNames(list client.ObjectList) ([]string, error) {
	items, err := apimeta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, o := range items {
		m, err := apimeta.Accessor(o)
		if err != nil {
			return nil, err
		}
		names = append(names, m.GetName())
	}
	slices.Sort(names)
	return names, nil
}
