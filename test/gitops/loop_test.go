package gitops

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

const (
	prodApp   = "agents-prod"
	devApp    = "agents-dev"
	fleetName = "assistants"
	// sample is how often the tests look at ArgoCD's verdict: a Healthy shown for less than this
	// could slip by, so it is well under the 0.05-0.3 s windows seen before the hashed prompt names.
	sample = 50 * time.Millisecond
)

var prodFleet = client.ObjectKey{Namespace: "agents-prod", Name: fleetName}

// The loop, in the order a team lives it. Each step needs the one before, so the first failure stops it.
func TestGitOpsLoop(t *testing.T) {
	needCluster(t)
	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"prod syncs and is Healthy only once the fleet is Ready", prodSyncs},
		{"dev with GPUs is refused with the GPU policy's message", devGPUsRefused},
		{"a prompt commit rolls the workers and is Healthy only on the new prompt", promptCommitRolls},
		{"git revert rolls back to the previous prompt", revertRollsBack},
		{"hand edits are reverted: the RayCluster by the operator, the AgentFleet by ArgoCD", handEditsReverted},
		{"a crash loop past the restart budget shows the Application Degraded", crashLoopDegraded},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.Logf("stopping at %q: the steps after it need it (logs: %s)", s.name, c.Dir)
			return
		}
	}
}

func prodSyncs(t *testing.T) {
	ctx := context.Background()
	app, err := application(repo, "prod", git.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	head := git.head(t)
	start := time.Now()
	hashes := promptHashes(git.read(t, "overlays/prod/prompt.md"))
	watchRollout(t, prodApp, head, 4*time.Minute, func(ctx context.Context) (string, bool) {
		return fleetReadyWith(ctx, hashes)
	})
	t.Logf("prod: first sync to Healthy in %s", time.Since(start).Round(time.Millisecond))
}

func devGPUsRefused(t *testing.T) {
	ctx := context.Background()
	rev := git.commit(t, "dev: try a GPU", map[string]string{"overlays/dev/fleet.yaml": strings.Replace(
		git.read(t, "overlays/dev/fleet.yaml"), "gpus: 0", "gpus: 1", 1)})
	app, err := application(repo, "dev", git.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	const want = "namespace agents-dev does not allow GPUs (label agentfleet.dev/gpu-allowed=false)"
	eventually(t, 2*time.Minute, "dev's sync failing with the GPU policy's message", func(ctx context.Context) (bool, string) {
		s, err := getApp(ctx, k8s, devApp)
		if err != nil {
			return false, err.Error()
		}
		return s.Revision == rev && strings.Contains(s.OpMessage, want), s.String()
	})
	s, _ := getApp(ctx, k8s, devApp)
	t.Logf("dev: %s", s.OpMessage)
	if s.Sync == "Synced" {
		t.Errorf("dev reported Synced with the fleet refused: %s", s)
	}
	var f v1alpha1.AgentFleet
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "agents-dev", Name: fleetName}, &f); err == nil {
		t.Errorf("the refused fleet was stored: %+v", f.Spec.Worker)
	}
	// The team takes it back; dev is removed so that the steps below have the cores to themselves.
	git.revert(t, rev)
	if err := k8s.Delete(ctx, app); err != nil {
		t.Fatal(err)
	}
}

func promptCommitRolls(t *testing.T) {
	text := git.read(t, "overlays/prod/prompt.md") + "Answer in English, in at most three short paragraphs.\n"
	rev := git.commit(t, "prod: shorter answers", map[string]string{"overlays/prod/prompt.md": text})
	rolled = rev
	commitToHealthy(t, rev, promptHashes(text))
}

// rolled is the prompt commit of promptCommitRolls, which revertRollsBack reverts.
var rolled string

func revertRollsBack(t *testing.T) {
	if rolled == "" {
		t.Fatal("no prompt commit to revert")
	}
	old := promptHashesAt(t, rolled+"^")
	rev := git.revert(t, rolled)
	commitToHealthy(t, rev, old)
}

// commitToHealthy refreshes prod at rev, as a deploy pipeline does right after a push, and waits for
// Healthy at rev, failing on any Healthy at rev before every worker runs the prompt of hashes.
func commitToHealthy(t *testing.T, rev string, hashes promptHash) {
	t.Helper()
	start := time.Now()
	if err := refresh(context.Background(), k8s, prodApp); err != nil {
		t.Fatal(err)
	}
	w := watchRollout(t, prodApp, rev, 3*time.Minute, func(ctx context.Context) (string, bool) {
		return fleetReadyWith(ctx, hashes)
	})
	fmt.Printf("gitops: commit %.7s to Healthy: %s (to Synced %s, then the roll of 8 workers; refresh annotation, reconciliation timeout %s)\n",
		rev, time.Since(start).Round(time.Millisecond), w.synced.Sub(start).Round(time.Millisecond), reconciliationTimeout)
	if !w.seen["Progressing"] {
		t.Errorf("the Application never showed Progressing at %.7s while the workers rolled; seen: %v", rev, w.seen)
	}
}

// watchRollout samples the Application every 50 ms until it is Synced and Healthy at rev, and fails
// at once if it is so while rolledOut says the cluster is not yet what rev asks for. It returns the
// health statuses seen at rev and when it was first Synced at rev.
func watchRollout(t *testing.T, app, rev string, timeout time.Duration, rolledOut func(context.Context) (string, bool)) rollout {
	t.Helper()
	var synced time.Time
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	seen := map[string]bool{}
	tick := time.NewTicker(sample)
	defer tick.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("%s not Synced and Healthy at %.7s after %s; last: %s (logs: %s)", app, rev, timeout, last, c.Dir)
		case <-tick.C:
		}
		s, err := getApp(ctx, k8s, app)
		if err != nil {
			last = err.Error()
			continue
		}
		last = s.String()
		if s.Revision != rev {
			continue
		}
		seen[s.Health] = true
		if s.Sync == "Synced" && synced.IsZero() {
			synced = time.Now()
		}
		if s.Sync != "Synced" || s.Health != "Healthy" {
			continue
		}
		// Read after ArgoCD's verdict: what the cluster shows now is at least as far along as what
		// ArgoCD judged.
		why, ok := rolledOut(ctx)
		if !ok {
			t.Fatalf("%s Synced and Healthy at %.7s before the cluster is there: %s; application: %s", app, rev, why, s)
		}
		return rollout{seen: seen, synced: synced}
	}
}

// rollout is what watchRollout saw.
type rollout struct {
	seen   map[string]bool // health statuses at the revision
	synced time.Time       // first seen Synced at the revision
}

// promptHash is the prompt hash the pods of a fleet carry (the label's 16 digits and the full one).
type promptHash struct{ full, label string }

func promptHashes(text string) promptHash {
	h := rayspecs.PromptHash(text)
	return promptHash{full: h, label: h[:16]}
}

func promptHashesAt(t *testing.T, rev string) promptHash {
	t.Helper()
	text, err := git.run("show", rev+":"+samplePath+"/overlays/prod/prompt.md")
	if err != nil {
		t.Fatal(err)
	}
	return promptHashes(text + "\n") // git show's output lost the file's last newline to TrimSpace
}

// fleetReadyWith says whether prod's fleet is Ready for its current generation with every worker
// (not being deleted) on the prompt of want, as many as spec.replicas.
func fleetReadyWith(ctx context.Context, want promptHash) (string, bool) {
	var f v1alpha1.AgentFleet
	if err := k8s.Get(ctx, prodFleet, &f); err != nil {
		return err.Error(), false
	}
	ready := meta.FindStatusCondition(f.Status.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != f.Generation {
		return fmt.Sprintf("fleet generation %d not Ready: %+v", f.Generation, ready), false
	}
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(prodFleet.Namespace),
		client.MatchingLabels{v1alpha1.LabelFleet: fleetName, rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup}); err != nil {
		return err.Error(), false
	}
	n, stale := 0, []string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		n++
		if p.Annotations[v1alpha1.AnnotationPromptHash] != want.full {
			stale = append(stale, fmt.Sprintf("%s runs prompt %s", p.Name, p.Labels[v1alpha1.LabelPromptHash]))
		}
	}
	if len(stale) > 0 {
		return fmt.Sprintf("want prompt %s: %v", want.label, stale), false
	}
	if f.Spec.Replicas == nil || int32(n) != *f.Spec.Replicas {
		return fmt.Sprintf("%d workers, want %v", n, f.Spec.Replicas), false
	}
	return "", true
}

func handEditsReverted(t *testing.T) {
	ctx := context.Background()
	var rc rayv1.RayCluster
	eventually(t, 30*time.Second, "prod's RayCluster", func(ctx context.Context) (bool, string) {
		var list rayv1.RayClusterList
		if err := k8s.List(ctx, &list, client.InNamespace(prodFleet.Namespace), client.MatchingLabels{v1alpha1.LabelFleet: fleetName}); err != nil {
			return false, err.Error()
		}
		if len(list.Items) != 1 {
			return false, fmt.Sprintf("%d RayClusters", len(list.Items))
		}
		rc = list.Items[0]
		return true, ""
	})
	image := rc.Spec.WorkerGroupSpecs[0].Template.Spec.Containers[0].Image
	edited := rc.DeepCopy()
	edited.Spec.WorkerGroupSpecs[0].Template.Spec.Containers[0].Image = "registry.example.com/agents/assistant:hand-edited"
	if err := k8s.Patch(ctx, edited, client.MergeFrom(&rc), client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the RayCluster's worker image back to "+image, func(ctx context.Context) (bool, string) {
		var now rayv1.RayCluster
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&rc), &now); err != nil {
			return false, err.Error()
		}
		got := now.Spec.WorkerGroupSpecs[0].Template.Spec.Containers[0].Image
		return got == image, "image " + got
	})

	var f v1alpha1.AgentFleet
	if err := k8s.Get(ctx, prodFleet, &f); err != nil {
		t.Fatal(err)
	}
	want := *f.Spec.Replicas
	patch := []byte(`{"spec":{"replicas":3}}`)
	if err := k8s.Patch(ctx, &f, client.RawPatch("application/merge-patch+json", patch), client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, time.Minute, fmt.Sprintf("ArgoCD's self-heal putting spec.replicas back to %d", want), func(ctx context.Context) (bool, string) {
		var now v1alpha1.AgentFleet
		if err := k8s.Get(ctx, prodFleet, &now); err != nil {
			return false, err.Error()
		}
		return *now.Spec.Replicas == want, fmt.Sprintf("replicas %d", *now.Spec.Replicas)
	})
	t.Logf("hand edit of the AgentFleet reverted by ArgoCD in %s", time.Since(start).Round(time.Millisecond))
	// Back to 8 workers and Healthy. Not sampled for an early Healthy: during a self-heal ArgoCD
	// may show the verdict of the edited spec's Ready fleet for a moment, which is not the prompt
	// gate the steps above check.
	hashes := promptHashes(git.read(t, "overlays/prod/prompt.md"))
	eventually(t, 2*time.Minute, "prod Synced and Healthy with 8 workers again", func(ctx context.Context) (bool, string) {
		s, err := getApp(ctx, k8s, prodApp)
		if err != nil {
			return false, err.Error()
		}
		why, ok := fleetReadyWith(ctx, hashes)
		return ok && s.Sync == "Synced" && s.Health == "Healthy", why + "; " + s.String()
	})
}

func crashLoopDegraded(t *testing.T) {
	crashAll := func(ctx context.Context) {
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, client.InNamespace(prodFleet.Namespace),
			client.MatchingLabels{v1alpha1.LabelFleet: fleetName, rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup}); err != nil {
			return
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Waiting == nil {
				_ = c.CrashLoop(ctx, client.ObjectKeyFromObject(&p), "ray-worker", 3)
			}
		}
	}
	eventually(t, 2*time.Minute, "prod Degraded in ArgoCD with the restart budget spent", func(ctx context.Context) (bool, string) {
		crashAll(ctx) // every replacement crashes too
		s, err := getApp(ctx, k8s, prodApp)
		if err != nil {
			return false, err.Error()
		}
		return s.Health == "Degraded" && s.ResourceHealth["AgentFleet/"+fleetName] == "Degraded", s.String()
	})
	s, _ := getApp(context.Background(), k8s, prodApp)
	t.Logf("prod: %s", s)
}

// eventually polls cond every 100 ms for up to timeout, failing with what it last said.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	for {
		ok, msg := cond(ctx)
		if ok {
			return
		}
		last = msg
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not after %s; last: %s (logs: %s)", what, timeout, last, c.Dir)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
