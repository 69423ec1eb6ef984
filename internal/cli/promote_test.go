package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

func TestPromote(t *testing.T) {
	started := metav1.NewTime(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	fleet := func(phase v1alpha1.RolloutPhase) *v1alpha1.AgentFleet {
		f := &v1alpha1.AgentFleet{ObjectMeta: metav1.ObjectMeta{Name: "coders", Namespace: "team"}}
		if phase != "" {
			f.Status.Rollout = &v1alpha1.RolloutStatus{Phase: phase, Canary: &v1alpha1.RevisionStatus{Revision: "9c1f"}, StartedAt: &started, Message: "3 of minTasks 20 tasks"}
		}
		return f
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "team", Name: "coders"}
	for name, tc := range map[string]struct {
		fleet      *v1alpha1.AgentFleet
		annotation string // want, "" for unchanged
		err        string
	}{
		"waiting: promoted, by its revision and start": {fleet(v1alpha1.RolloutPhaseWaitingForPromotion), "9c1f@20261127T090000", ""},
		"still being judged":                           {fleet(v1alpha1.RolloutPhaseCanary), "", "still being judged (3 of minTasks 20 tasks)"},
		"aborted":                                      {fleet(v1alpha1.RolloutPhaseAborted), "", "is Aborted, not waiting for promotion"},
		"no canary":                                    {fleet(""), "", "has no canary to promote"},
		"no such fleet":                                {nil, "", `agentfleet "coders" not found in namespace "team"`},
	} {
		t.Run(name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(scheme)
			if tc.fleet != nil {
				b = b.WithObjects(tc.fleet)
			}
			c := b.Build()
			var out bytes.Buffer
			err := Promote(context.Background(), c, key, &out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f := &v1alpha1.AgentFleet{}
			if err := c.Get(context.Background(), key, f); err != nil {
				t.Fatal(err)
			}
			if got := f.Annotations[v1alpha1.AnnotationPromote]; got != tc.annotation {
				t.Errorf("annotation %q, want %q", got, tc.annotation)
			}
		})
	}
}
