package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The operator, with its own ClusterRole and token, deletes only agent workers that Kubernetes is
// already deleting (a stranded worker's force delete); any other pod is refused, and the policy is
// no one else's business.
func TestOperatorDeletesOnlyWorkersBeingDeleted(t *testing.T) {
	if k8s == nil {
		t.Skip("needs kube-apiserver (skipped in -short mode)")
	}
	ctx := context.Background()
	const ns, app = "agentfleet-system", "team-a"
	for _, n := range []string{ns, app} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	apply(t, ctx, "../../config/rbac/role.yaml")
	apply(t, ctx, "../../config/manager/service_account.yaml")
	apply(t, ctx, "../../config/manager/role_binding.yaml")

	// A pod; being deleted, it stays so (a finalizer, as a silent node's kubelet never finishes it).
	const hold = "example.com/hold"
	pod := func(name string, worker, beingDeleted bool) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: app, Finalizers: []string{hold}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "agent"}}}}
		if worker {
			p.Labels = map[string]string{"agentfleet.dev/fleet": "alpha"}
		}
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = k8s.Patch(context.Background(), p, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
			_ = k8s.Delete(context.Background(), p)
		})
		if beingDeleted {
			if err := k8s.Delete(ctx, p, client.GracePeriodSeconds(30)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pod("worker-stranded", true, true)
	pod("worker-running", true, false)
	pod("other-terminating", false, true)
	pod("other-running", false, false)
	pod("probe", false, false)

	admin, err := kubernetes.NewForConfig(k8sConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "agentfleet-operator", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	operator := clientWithToken(t, tr.Status.Token)
	// As the stranded-worker phase deletes: at once, on the pod's UID.
	forceDelete := func(ctx context.Context, name string) error {
		p, err := admin.CoreV1().Pods(app).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return operator.CoreV1().Pods(app).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID}})
	}

	apply(t, ctx, "../../config/policy/operator-pod-delete-policy.yaml")
	// The policy reaches the API server's cache asynchronously: wait until it refuses the operator a
	// pod of no fleet (which its ClusterRole alone allows).
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		// Allowed before: the pod, held by its finalizer, is then being deleted, and refused alike.
		err := forceDelete(ctx, "probe")
		return err != nil && strings.Contains(err.Error(), "agentfleet-operator-pod-delete"), nil
	})
	if err != nil {
		t.Fatalf("the operator pod-delete policy is not enforced 30 s after it was created: %v", err)
	}

	for _, tc := range []struct {
		pod  string
		want string // "" allowed; else a part of the refusal
	}{
		{pod: "worker-stranded"},
		{pod: "worker-running", want: "only finishes the deletion of a stranded agent worker that Kubernetes began; pod team-a/worker-running is not being deleted"},
		{pod: "other-terminating", want: "deletes only agent workers (pods labelled agentfleet.dev/fleet), not pod team-a/other-terminating"},
		{pod: "other-running", want: "deletes only agent workers"},
	} {
		t.Run(tc.pod, func(t *testing.T) { expectRefusal(t, forceDelete(ctx, tc.pod), tc.want) })
	}

	// Others are not the policy's business: an administrator deletes any pod.
	if err := admin.CoreV1().Pods(app).Delete(ctx, "other-running", metav1.DeleteOptions{}); err != nil {
		t.Errorf("an administrator's delete refused: %v", err)
	}
}
