// Package heartbeat is the agent side of AgentFleet's heartbeat contract, so that agent authors
// write no Kubernetes code:
//
//	hb, err := heartbeat.FromEnv(clientset) // AGENTFLEET_FLEET, AGENTFLEET_NAMESPACE, AGENTFLEET_POD_NAME, AGENTFLEET_HEARTBEAT_INTERVAL
//	hb.Start(ctx)                          // keeps the Lease renewed until ctx ends
//	hb.Step("search: kubernetes leases")   // at every step of a task
//	hb.Idle()                              // when the task is done
//
// Each worker keeps a coordination.k8s.io/v1 Lease named after its pod, labelled with its fleet,
// renewed at least every interval, with its state, step counts, how many times in a row the same
// action was taken, and the time of its last step. The operator replaces workers whose Lease goes
// stale (stalled) or whose counts pass the fleet's limits (looping).
//
// Writes are coalesced: a step is written at once when the last write is an interval old, and
// otherwise with the next renewal, so that a worker writes about once per interval however fast it
// steps. A step that starts a task (from idle) is written at once.
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
)

// The Lease's contract (exact keys; the operator's supervisor reads them).
const (
	LabelFleet              = "agentfleet.dev/fleet"
	AnnotationState         = "agentfleet.dev/state"
	AnnotationSteps         = "agentfleet.dev/steps"
	AnnotationTaskSteps     = "agentfleet.dev/task-steps"
	AnnotationActionRepeats = "agentfleet.dev/action-repeats"
	AnnotationLastStepTime  = "agentfleet.dev/last-step-time"
)

// Client keeps one worker's heartbeat Lease.
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
	dirty      bool
	ctx        context.Context
	writes     int64

	writeMu sync.Mutex            // serialises writes of the Lease
	lease   *coordinationv1.Lease // as last written
}

// New returns a client for the worker pod in namespace of fleet, renewing at least every interval.
func New(cs kubernetes.Interface, namespace, fleet, pod string, interval time.Duration) *Client {
	return &Client{cs: cs, namespace: namespace, fleet: fleet, me: pod, interval: interval, clock: clock.RealClock{}, state: "idle"}
}

// FromEnv returns a client configured from the environment the operator gives agent workers.
func FromEnv(cs kubernetes.Interface) (*Client, error) {
	var missing []string
	get := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	}
	ns, fleet, pod, every := get("AGENTFLEET_NAMESPACE"), get("AGENTFLEET_FLEET"), get("AGENTFLEET_POD_NAME"), get("AGENTFLEET_HEARTBEAT_INTERVAL")
	if len(missing) > 0 {
		return nil, fmt.Errorf("heartbeat: not set: %v (is the fleet's spec.health.heartbeat set?)", missing)
	}
	seconds, err := strconv.Atoi(every)
	if err != nil || seconds < 1 {
		return nil, fmt.Errorf("heartbeat: AGENTFLEET_HEARTBEAT_INTERVAL=%q is not a number of seconds", every)
	}
	return New(cs, ns, fleet, pod, time.Duration(seconds)*time.Second), nil
}

// WithClock replaces the clock, for tests.
func (c *Client) WithClock(clk clock.WithTicker) *Client { c.clock = clk; return c }

// Writes is how many times the Lease was written.
func (c *Client) Writes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// Start writes the Lease and keeps renewing it every interval until ctx ends.
func (c *Client) Start(ctx context.Context) error {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	if err := c.flush(ctx, true); err != nil {
		return err
	}
	go func() {
		t := c.clock.NewTicker(c.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				_ = c.flush(ctx, true) // a failed renewal is retried at the next tick
			}
		}
	}()
	return nil
}

// Step records a step of the current task taking action: the same action as the previous step
// (compared by hash) counts as a repeat.
func (c *Client) Step(action string) error {
	h := sha256.Sum256([]byte(action))
	c.mu.Lock()
	startsTask := c.state != "working"
	if !startsTask && h == c.lastAction {
		c.repeats++
	} else {
		c.repeats = 1
	}
	if startsTask {
		c.taskSteps = 0
	}
	c.state, c.lastAction = "working", h
	c.steps++
	c.taskSteps++
	c.lastStep = c.clock.Now()
	c.dirty = true
	now := startsTask || c.clock.Since(c.lastWrite) >= c.interval
	ctx := c.ctx
	c.mu.Unlock()
	if now && ctx != nil {
		return c.flush(ctx, false)
	}
	return nil
}

// Idle records that the current task is done: the worker waits for the next one.
func (c *Client) Idle() error {
	c.mu.Lock()
	if c.state == "idle" {
		c.mu.Unlock()
		return nil // nothing new: the renewals go on
	}
	c.state, c.taskSteps, c.repeats, c.lastAction = "idle", 0, 0, [32]byte{}
	c.dirty = true
	ctx := c.ctx
	c.mu.Unlock()
	if ctx != nil {
		return c.flush(ctx, false)
	}
	return nil
}

// flush writes the Lease when renew is set or there is something new.
func (c *Client) flush(ctx context.Context, renew bool) error {
	c.mu.Lock()
	if !renew && !c.dirty {
		c.mu.Unlock()
		return nil
	}
	now := c.clock.Now()
	annotations := map[string]string{
		AnnotationState:         c.state,
		AnnotationSteps:         strconv.FormatInt(c.steps, 10),
		AnnotationTaskSteps:     strconv.FormatInt(c.taskSteps, 10),
		AnnotationActionRepeats: strconv.FormatInt(c.repeats, 10),
	}
	if !c.lastStep.IsZero() {
		annotations[AnnotationLastStepTime] = c.lastStep.UTC().Format(time.RFC3339Nano)
	}
	c.dirty, c.lastWrite = false, now
	c.writes++
	c.mu.Unlock()

	leases := c.cs.CoordinationV1().Leases(c.namespace)
	renewTime := metav1.NewMicroTime(now)
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	lease := c.lease
	if lease == nil {
		got, err := leases.Get(ctx, c.me, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			created, err := leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: c.me, Namespace: c.namespace, Labels: map[string]string{LabelFleet: c.fleet}, Annotations: annotations},
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
	lease.Labels = map[string]string{LabelFleet: c.fleet}
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

func wrap(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("heartbeat: writing the Lease: %w", err)
}
