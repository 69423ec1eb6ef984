// Package heartbeat is the agent side of AgentFleet's heartbeat contract, so that agent authors
// write no Kubernetes code:
//
//	hb, err := heartbeat.FromEnv(clientset) // the AGENTFLEET_* environment the operator sets
//	err = hb.Start(ctx)                     // writes the Lease; renews it until ctx ends
//	err = hb.Step(ctx, "search: kubernetes leases") // at every step of a task
//	err = hb.Tokens(ctx, 1200, 350)         // the model's tokens, as they are used (optional)
//	err = hb.TaskDone(ctx, true)            // when the task is done, with its outcome (or Idle: none)
//
// Each worker keeps a coordination.k8s.io/v1 Lease named after its pod, labelled with its fleet,
// renewed at least every interval, with its state, step counts, how many times in a row the same
// action was taken (actions are compared by their SHA-256), and the time of its last step. The
// operator replaces workers whose Lease goes stale (stalled) or whose counts pass the fleet's
// limits (looping). The names and formats are the contract's, in
// github.com/agentfleet/agentfleet/api/heartbeat.
//
// Contexts: Start's ctx governs the renewals, which stop when it ends (an agent cancels it when it
// shuts down). Step and Idle write, when they write at all, with the ctx they are given; with a
// ctx already done they record the step but write nothing. Nothing is written after every ctx
// given has ended.
//
// Writes are coalesced: a step that starts a task (from idle), Idle and TaskDone are written at
// once; any other step, and Tokens, are written at once only when the last write is an interval
// old, and otherwise with the next renewal, so that a worker writes about once per interval however
// fast it steps. Task outcomes and tokens are annotated once reported: a client that never reports
// them leaves them absent, not 0.
//
// This package is a module of its own (sdk/go) that depends only on client-go, apimachinery, the
// Kubernetes API types, k8s.io/utils and the contract, so that an agent built with it does not
// inherit the operator's KubeRay and controller-runtime versions.
package heartbeat

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
)

// Client keeps one worker's heartbeat Lease. Its methods are safe for concurrent use.
type Client struct {
	cs                   kubernetes.Interface
	namespace, fleet, me string
	interval             time.Duration
	clock                clock.WithTicker

	mu         sync.Mutex
	state      string
	steps      int64
	taskSteps  int64
	repeats    int64
	lastAction [32]byte
	lastStep   time.Time
	lastWrite  time.Time
	// Outcomes and tokens, once reported (reported*).
	taskStarted                time.Time
	succeeded, failed          int64
	tokensIn, tokensOut        int64
	taskTokens                 int64
	reportedTasks, reportedTok bool
	dirty                      bool
	writes                     int64
	renewing                   chan struct{} // closed when the renewals started by Start have stopped

	writeMu sync.Mutex            // serialises writes of the Lease
	lease   *coordinationv1.Lease // as last written
}

// New returns a client for the worker pod in namespace of fleet, renewing at least every interval.
func New(cs kubernetes.Interface, namespace, fleet, pod string, interval time.Duration) *Client {
	return &Client{cs: cs, namespace: namespace, fleet: fleet, me: pod, interval: interval, clock: clock.RealClock{}, state: heartbeatapi.StateIdle}
}

// FromEnv returns a client configured from the environment the operator gives agent workers of a
// fleet with a heartbeat contract.
func FromEnv(cs kubernetes.Interface) (*Client, error) {
	var missing []string
	get := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	}
	ns, fleet, pod, every := get(heartbeatapi.EnvNamespace), get(heartbeatapi.EnvFleet), get(heartbeatapi.EnvPodName), get(heartbeatapi.EnvHeartbeatInterval)
	if len(missing) > 0 {
		return nil, fmt.Errorf("heartbeat: not set: %v (is the fleet's spec.health.heartbeat set?)", missing)
	}
	seconds, err := strconv.Atoi(every)
	if err != nil || seconds < 1 {
		return nil, fmt.Errorf("heartbeat: %s=%q is not a number of seconds", heartbeatapi.EnvHeartbeatInterval, every)
	}
	return New(cs, ns, fleet, pod, time.Duration(seconds)*time.Second), nil
}

// WithClock replaces the clock, for tests. Call it before Start.
func (c *Client) WithClock(clk clock.WithTicker) *Client { c.clock = clk; return c }

// Writes is how many times the Lease was written (or a write was tried).
func (c *Client) Writes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// Start writes the Lease and keeps renewing it every interval until ctx ends. Call it once. Its
// error is the first write's: a renewal that fails is tried again at the next interval.
func (c *Client) Start(ctx context.Context) error {
	if err := c.flush(ctx, true); err != nil {
		return err
	}
	// The ticker exists before Start returns, so that a renewal is due one interval from now
	// whenever the goroutine runs.
	t := c.clock.NewTicker(c.interval)
	done := make(chan struct{})
	c.mu.Lock()
	c.renewing = done
	c.mu.Unlock()
	go func() {
		defer close(done)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				// Both may be ready at once, and select picks either: an ended ctx wins.
				if ctx.Err() != nil {
					return
				}
				_ = c.flush(ctx, true) // a failed renewal is retried at the next tick
			}
		}
	}()
	return nil
}

// Step records a step of the current task taking action: the same action as the previous step of
// the task counts as a repeat. A step from idle starts a task.
func (c *Client) Step(ctx context.Context, action string) error {
	h := sha256.Sum256([]byte(action))
	c.mu.Lock()
	startsTask := c.state != heartbeatapi.StateWorking
	if !startsTask && h == c.lastAction {
		c.repeats++
	} else {
		c.repeats = 1
	}
	if startsTask {
		c.taskSteps = 0
		c.taskStarted = c.clock.Now()
	}
	c.state, c.lastAction = heartbeatapi.StateWorking, h
	c.steps++
	c.taskSteps++
	c.lastStep = c.clock.Now()
	c.dirty = true
	now := startsTask || c.clock.Since(c.lastWrite) >= c.interval
	c.mu.Unlock()
	if now {
		return c.flush(ctx, false)
	}
	return nil
}

// Idle records that the current task is done, without an outcome: the worker waits for the next one.
func (c *Client) Idle(ctx context.Context) error {
	c.mu.Lock()
	if c.state == heartbeatapi.StateIdle {
		c.mu.Unlock()
		return nil // nothing new: the renewals go on
	}
	c.endTask()
	c.mu.Unlock()
	return c.flush(ctx, false)
}

// TaskDone records that the current task is done, succeeded (ok) or failed: the worker waits for the
// next one. The operator counts outcomes per fleet (and judges canaries by them).
func (c *Client) TaskDone(ctx context.Context, ok bool) error {
	c.mu.Lock()
	if ok {
		c.succeeded++
	} else {
		c.failed++
	}
	c.reportedTasks = true
	c.endTask()
	c.mu.Unlock()
	return c.flush(ctx, false)
}

// Tokens records model tokens the current task used: in (prompt) and out (completion). Negative
// counts are an error.
func (c *Client) Tokens(ctx context.Context, in, out int) error {
	if in < 0 || out < 0 {
		return fmt.Errorf("heartbeat: tokens must not be negative: %d in, %d out", in, out)
	}
	c.mu.Lock()
	c.tokensIn += int64(in)
	c.tokensOut += int64(out)
	c.taskTokens += int64(in) + int64(out)
	c.reportedTok, c.dirty = true, true
	now := c.clock.Since(c.lastWrite) >= c.interval
	c.mu.Unlock()
	if now {
		return c.flush(ctx, false)
	}
	return nil
}

// endTask returns to idle. Called with mu held.
func (c *Client) endTask() {
	c.state, c.taskSteps, c.repeats, c.lastAction = heartbeatapi.StateIdle, 0, 0, [32]byte{}
	c.taskTokens, c.taskStarted = 0, time.Time{}
	c.dirty = true
}

// flush writes the Lease when renew is set or there is something new.
func (c *Client) flush(ctx context.Context, renew bool) error {
	if ctx.Err() != nil {
		return wrap(ctx.Err()) // shutting down: what is recorded stays unwritten
	}
	// writeMu is taken before the snapshot, so that writes go out in the order their snapshots were
	// taken: a renewal's older snapshot can never overwrite a newer Idle or Step.
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	if !renew && !c.dirty {
		c.mu.Unlock()
		return nil
	}
	now := c.clock.Now()
	annotations := map[string]string{
		heartbeatapi.AnnotationState:         c.state,
		heartbeatapi.AnnotationSteps:         strconv.FormatInt(c.steps, 10),
		heartbeatapi.AnnotationTaskSteps:     strconv.FormatInt(c.taskSteps, 10),
		heartbeatapi.AnnotationActionRepeats: strconv.FormatInt(c.repeats, 10),
	}
	if !c.lastStep.IsZero() {
		annotations[heartbeatapi.AnnotationLastStepTime] = c.lastStep.UTC().Format(heartbeatapi.TimeFormat)
	}
	if c.reportedTasks {
		annotations[heartbeatapi.AnnotationTasksSucceeded] = strconv.FormatInt(c.succeeded, 10)
		annotations[heartbeatapi.AnnotationTasksFailed] = strconv.FormatInt(c.failed, 10)
	}
	if c.reportedTok {
		annotations[heartbeatapi.AnnotationTokensIn] = strconv.FormatInt(c.tokensIn, 10)
		annotations[heartbeatapi.AnnotationTokensOut] = strconv.FormatInt(c.tokensOut, 10)
		annotations[heartbeatapi.AnnotationTaskTokens] = strconv.FormatInt(c.taskTokens, 10)
	}
	if !c.taskStarted.IsZero() {
		annotations[heartbeatapi.AnnotationTaskStarted] = c.taskStarted.UTC().Format(heartbeatapi.TimeFormat)
	}
	c.dirty, c.lastWrite = false, now
	c.writes++
	c.mu.Unlock()

	leases := c.cs.CoordinationV1().Leases(c.namespace)
	labels := map[string]string{heartbeatapi.LabelFleet: c.fleet}
	renewTime := metav1.NewMicroTime(now)
	lease := c.lease
	if lease == nil {
		got, err := leases.Get(ctx, c.me, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			created, err := leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: c.me, Namespace: c.namespace, Labels: labels, Annotations: annotations},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity: ptr.To(c.me), LeaseDurationSeconds: ptr.To(int32(c.interval.Seconds())),
					AcquireTime: &renewTime, RenewTime: &renewTime,
				},
			}, metav1.CreateOptions{})
			if err == nil {
				c.lease = created
			}
			return wrap(err)
		case err != nil:
			return wrap(err)
		}
		lease = got
	}
	lease = lease.DeepCopy()
	lease.Labels = labels
	lease.Annotations = annotations
	lease.Spec.HolderIdentity = ptr.To(c.me)
	lease.Spec.RenewTime = &renewTime
	// One write per renewal: the Lease last written is updated in place; a conflict or a deleted
	// Lease (the operator deletes a replaced worker's) makes the next write read it again.
	updated, err := leases.Update(ctx, lease, metav1.UpdateOptions{})
	if err != nil {
		c.lease = nil
		return wrap(err)
	}
	c.lease = updated
	return nil
}

// wrap names the Lease in an error; the end of a ctx (the agent shutting down) is none.
func wrap(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("heartbeat: writing the Lease: %w", err)
}
