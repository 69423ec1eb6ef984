package fleet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

func TestPlanWatch(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := map[string]struct {
		watched  bool
		nWatched int
		deniedAt time.Time
		want     watchPlan
	}{
		"a new kind under the cap":          {nWatched: 3, want: watchStart},
		"the first kind":                    {want: watchStart},
		"already watched":                   {watched: true, nWatched: 3, want: watchExisting},
		"already watched, at the cap":       {watched: true, nWatched: maxDependencyKinds, want: watchExisting},
		"one below the cap":                 {nWatched: maxDependencyKinds - 1, want: watchStart},
		"a new kind at the cap is polled":   {nWatched: maxDependencyKinds, want: watchPollCap},
		"a new kind over the cap is polled": {nWatched: maxDependencyKinds + 5, want: watchPollCap},
		"denied a moment ago":               {deniedAt: now.Add(-time.Second), want: watchPollDenied},
		"denied just under the recheck ago": {deniedAt: now.Add(-dependencyRecheck + time.Second), want: watchPollDenied},
		"denied a recheck ago: asked again": {deniedAt: now.Add(-dependencyRecheck), want: watchStart},
		"denied long ago, now at the cap":   {deniedAt: now.Add(-time.Hour), nWatched: maxDependencyKinds, want: watchPollCap},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := planWatch(tc.watched, tc.nWatched, tc.deniedAt, now); got != tc.want {
				t.Errorf("planWatch = %s, want %s", got, tc.want)
			}
		})
	}
}

// reviewClient answers SelfSubjectAccessReviews from allowed ("verb group/resource") and counts them.
type reviewClient struct {
	client.Client
	allowed map[string]bool
	err     error
	asked   []string
}

func (c *reviewClient) Create(_ context.Context, obj client.Object, _ ...client.CreateOption) error {
	r := obj.(*authorizationv1.SelfSubjectAccessReview)
	a := r.Spec.ResourceAttributes
	key := a.Verb + " " + schema.GroupResource{Group: a.Group, Resource: a.Resource}.String()
	c.asked = append(c.asked, key)
	if c.err != nil {
		return c.err
	}
	r.Status.Allowed = c.allowed[key]
	return nil
}

// fakeController records the watches started.
type fakeController struct{ started int }

func (c *fakeController) Watch(source.Source) error { c.started++; return nil }

func TestDependencyWatches(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	qdrant := schema.GroupVersionKind{Group: "qdrant.io", Version: "v1", Kind: "QdrantCluster"}
	qdrants := schema.GroupResource{Group: "qdrant.io", Resource: "qdrantclusters"}
	deploy := schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	deploys := schema.GroupResource{Group: "apps", Resource: "deployments"}

	// call is one watch of a kind at an offset from now, and what it should do.
	type call struct {
		gvk     schema.GroupVersionKind
		gr      schema.GroupResource
		at      time.Duration
		grant   bool // RBAC grants list and watch on gr before this call
		watched bool
	}
	cases := map[string]struct {
		allowed   map[string]bool
		reviewErr error
		full      bool // maxDependencyKinds other kinds are watched already
		calls     []call
		wantAsked []string
		wantWatch int
	}{
		"allowed: one informer, asked once": {
			allowed:   map[string]bool{"list deployments.apps": true, "watch deployments.apps": true},
			calls:     []call{{gvk: deploy, gr: deploys, watched: true}, {gvk: deploy, gr: deploys, at: time.Minute, watched: true}},
			wantAsked: []string{"list deployments.apps", "watch deployments.apps"},
			wantWatch: 1,
		},
		"list allowed, watch denied: polled, asked again only after the recheck": {
			allowed: map[string]bool{"list qdrantclusters.qdrant.io": true},
			calls: []call{
				{gvk: qdrant, gr: qdrants},
				{gvk: qdrant, gr: qdrants, at: time.Minute},
				{gvk: qdrant, gr: qdrants, at: dependencyRecheck},
			},
			wantAsked: []string{
				"list qdrantclusters.qdrant.io", "watch qdrantclusters.qdrant.io",
				"list qdrantclusters.qdrant.io", "watch qdrantclusters.qdrant.io",
			},
		},
		"denied, then granted: watched once asked again": {
			calls: []call{
				{gvk: qdrant, gr: qdrants},
				{gvk: qdrant, gr: qdrants, at: time.Minute, grant: true},
				{gvk: qdrant, gr: qdrants, at: dependencyRecheck, watched: true},
				{gvk: qdrant, gr: qdrants, at: 2 * dependencyRecheck, watched: true},
			},
			wantAsked: []string{
				"list qdrantclusters.qdrant.io", "watch qdrantclusters.qdrant.io",
				"list qdrantclusters.qdrant.io", "watch qdrantclusters.qdrant.io",
			},
			wantWatch: 1,
		},
		"the review fails: polled, asked again at the next reconcile": {
			reviewErr: errors.New("connection refused"),
			calls:     []call{{gvk: deploy, gr: deploys}, {gvk: deploy, gr: deploys, at: time.Second}},
			wantAsked: []string{"list deployments.apps", "list deployments.apps"},
		},
		"at the cap: polled without asking": {
			allowed:   map[string]bool{"list deployments.apps": true, "watch deployments.apps": true},
			full:      true,
			calls:     []call{{gvk: deploy, gr: deploys}, {gvk: deploy, gr: deploys, at: time.Minute}},
			wantAsked: nil,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := &reviewClient{allowed: tc.allowed, err: tc.reviewErr}
			fc := &fakeController{}
			w := &dependencyWatches{watched: map[schema.GroupVersionKind]bool{}, ctrl: fc, client: c}
			if tc.full {
				for i := range maxDependencyKinds {
					w.watched[schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Kind" + string(rune('A'+i))}] = true
				}
			}
			for i, call := range tc.calls {
				if call.grant {
					c.allowed = map[string]bool{"list " + call.gr.String(): true, "watch " + call.gr.String(): true}
				}
				if got := w.watch(ctx, call.gvk, call.gr, now.Add(call.at)); got != call.watched {
					t.Errorf("call %d: watched = %v, want %v", i, got, call.watched)
				}
			}
			if diff := cmp.Diff(tc.wantAsked, c.asked); diff != "" {
				t.Errorf("access reviews (-want +got):\n%s", diff)
			}
			if fc.started != tc.wantWatch {
				t.Errorf("watches started = %d, want %d", fc.started, tc.wantWatch)
			}
		})
	}
}
