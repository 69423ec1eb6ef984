package cluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Fault injection. kwok writes a pod's status once, when the pod is scheduled (its pod-ready stage
// selects pods without a pod IP), so what is written here afterwards stays: these helpers write
// the status a kubelet would write for the fault.

// FailContainer writes the status of a container that has just exited with exitCode: terminated,
// not ready, the pod not Ready. The phase follows the kubelet: with restartPolicy Never it becomes
// Failed (Succeeded for exit code 0), with OnFailure Succeeded for exit code 0; otherwise it stays
// Running with the container terminated, as between the exit and the kubelet's restart.
func (c *Cluster) FailContainer(ctx context.Context, pod client.ObjectKey, container string, exitCode int32) error {
	return c.updatePodStatus(ctx, pod, container, func(p *corev1.Pod, cs *corev1.ContainerStatus, now metav1.Time) {
		started := now
		if cs.State.Running != nil {
			started = cs.State.Running.StartedAt
		}
		reason := "Error"
		if exitCode == 0 {
			reason = "Completed"
		}
		cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: exitCode, Reason: reason, StartedAt: started, FinishedAt: now,
		}}
		cs.Ready = false
		cs.Started = ptrTo(false)
		switch p.Spec.RestartPolicy {
		case corev1.RestartPolicyNever:
			p.Status.Phase = corev1.PodFailed
			if exitCode == 0 {
				p.Status.Phase = corev1.PodSucceeded
			}
		case corev1.RestartPolicyOnFailure:
			if exitCode == 0 {
				p.Status.Phase = corev1.PodSucceeded
			}
		}
	})
}

// CrashLoop writes the status of a container in CrashLoopBackOff after restarts restarts, its last
// run ended with exit code 1: waiting, not ready, the pod not Ready, phase Running.
func (c *Cluster) CrashLoop(ctx context.Context, pod client.ObjectKey, container string, restarts int32) error {
	return c.updatePodStatus(ctx, pod, container, func(_ *corev1.Pod, cs *corev1.ContainerStatus, now metav1.Time) {
		cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 1, Reason: "Error", StartedAt: metav1.NewTime(now.Add(-time.Second)), FinishedAt: now,
		}}
		cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason:  "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off restarting failed container %s in pod %s", container, pod.Name),
		}}
		cs.RestartCount = restarts
		cs.Ready = false
		cs.Started = ptrTo(false)
	})
}

// updatePodStatus applies mutate to the named container's status and marks the pod not Ready,
// retrying on conflicts with kwok's own writes.
func (c *Cluster) updatePodStatus(ctx context.Context, key client.ObjectKey, container string,
	mutate func(*corev1.Pod, *corev1.ContainerStatus, metav1.Time)) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod := &corev1.Pod{}
		if err := c.Client.Get(ctx, key, pod); err != nil {
			return err
		}
		var cs *corev1.ContainerStatus
		for i := range pod.Status.ContainerStatuses {
			if pod.Status.ContainerStatuses[i].Name == container {
				cs = &pod.Status.ContainerStatuses[i]
			}
		}
		if cs == nil {
			return fmt.Errorf("pod has no status for container %q (is it scheduled and started?)", container)
		}
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		mutate(pod, cs, now)
		for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
			setPodCondition(pod, t, corev1.ConditionFalse, "ContainersNotReady", now)
		}
		return c.Client.Status().Update(ctx, pod)
	})
	if err != nil {
		return fmt.Errorf("injecting a fault into container %s of pod %s: %w", container, key, err)
	}
	return nil
}

func setPodCondition(pod *corev1.Pod, t corev1.PodConditionType, s corev1.ConditionStatus, reason string, now metav1.Time) {
	for i := range pod.Status.Conditions {
		cond := &pod.Status.Conditions[i]
		if cond.Type == t {
			if cond.Status != s {
				cond.LastTransitionTime = now
			}
			cond.Status, cond.Reason = s, reason
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: now})
}

func ptrTo[T any](v T) *T { return &v }
