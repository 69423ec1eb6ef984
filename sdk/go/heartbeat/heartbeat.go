// Package heartbeat is the agent side of AgentFleet's heartbeat contract, so that agent authors
// write no Kubernetes code:
//
//	hb, err := heartbeat.FromEnv(clientset) // the AGENTFLEET_* environment the operator sets
//	err = hb.Start(ctx)                     // writes the Lease; renews it until ctx ends
//	if hb.Paused() { ... }                  // before taking a task: the fleet's budget is spent
//	b := hb.Budget()                        // at each task's start: the per-task budget in force
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
// Budgets and pauses: the operator writes directives on the same Lease, and the client keeps them
// (it rewrites only the annotations it owns) and reads them at every write, so an agent learns of
// a change at its next write or renewal, within an interval. Budget is the per-task budget of the
// fleet's spec.budgets: the worker's environment (AGENTFLEET_MAX_*), as changed since on the Lease;
// a change rolls no worker, so read Budget at each task's start and hand it to the agent framework.
// The operator enforces the budget from outside as well. Paused is true while the fleet is paused by
// its budget (spec.budgets.onExceeded: Pause). A paused agent finishes or abandons its current task
// and reports it (TaskDone, with false for an abandoned one), keeps renewing (Start's ctx stays
// live: a worker that stops renewing is replaced as stalled), and starts no new task until Paused is
// false again; checking it once per interval while paused is enough.
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
// them leaves them absent, not 0. A write that conflicts (the operator wrote a directive since the
// Lease was last read) reads the Lease again and is retried at once, so no renewal is lost to it.
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
	"math"
	"os"
	"regexp"
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

	// The directives: the budget the worker started with (its environment), and the annotations
	// of the Lease as last read that the client does not own (the operator's).
	envBudget Budget
	operator  map[string]string

	writeMu sync.Mutex            // serialises writes of the Lease
	lease   *coordinationv1.Lease // as last written
}

// Budget is the per-task budget in force: what one task may take. A zero field is no limit.
type Budget struct {
	// MaxSteps is the steps (Step calls) one task may take. Past it the operator replaces the
	// worker as looping.
	MaxSteps int64
	// MaxTokens is the model tokens, input and output together, one task may use.
	MaxTokens int64
	// MaxDuration is how long one task may run, in whole seconds.
	MaxDuration time.Duration
	// MaxCost is what the model tokens of one task may cost: a decimal such as "0.50", in the
	// currency of the operator's price table; "" is no limit. It is a string, as in the AgentFleet
	// API, so that no precision is lost on the way: parse it as the agent needs.
	MaxCost string
}

// owned are the annotations the client writes: it removes those it no longer reports (the task's
// start when idle) and keeps every other, the operator's directives among them.
var owned = map[string]bool{
	heartbeatapi.AnnotationState: true, heartbeatapi.AnnotationSteps: true, heartbeatapi.AnnotationTaskSteps: true,
	heartbeatapi.AnnotationActionRepeats: true, heartbeatapi.AnnotationLastStepTime: true,
	heartbeatapi.AnnotationTasksSucceeded: true, heartbeatapi.AnnotationTasksFailed: true,
	heartbeatapi.AnnotationTokensIn: true, heartbeatapi.AnnotationTokensOut: true,
	heartbeatapi.AnnotationTaskTokens: true, heartbeatapi.AnnotationTaskStarted: true,
}

// New returns a client for the worker pod in namespace of fleet, renewing at least every interval.
// Its budget, before the operator writes one on the Lease, is none: see WithBudget.
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
	var b Budget
	var errs []error
	for _, pair := range heartbeatapi.BudgetAnnotations {
		if v, ok := os.LookupEnv(pair[1]); ok {
			if err := b.set(pair[1], v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", pair[1], v, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("heartbeat: the budget in the environment: %w", err)
	}
	return New(cs, ns, fleet, pod, time.Duration(seconds)*time.Second).WithBudget(b), nil
}

// WithClock replaces the clock, for tests. Call it before Start.
func (c *Client) WithClock(clk clock.WithTicker) *Client { c.clock = clk; return c }

// WithBudget sets the budget the worker was started with, which stands until the operator changes
// it on the Lease. FromEnv sets it from the environment; a client made with New has none. Call it
// before Start.
func (c *Client) WithBudget(b Budget) *Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.envBudget = b
	return c
}

// Budget is the per-task budget in force: for each limit, the operator's annotation on the Lease
// as last read when there is one ("" there is no limit), otherwise the environment's. Read it at
// each task's start: a budget change reaches a running worker this way, without a restart. A
// malformed annotation, which the operator does not write, is ignored: the environment's value
// stands.
func (c *Client) Budget() Budget {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.envBudget
	for _, pair := range heartbeatapi.BudgetAnnotations {
		if v, ok := c.operator[pair[0]]; ok {
			_ = b.set(pair[1], v) // on error b keeps the environment's value, as documented
		}
	}
	return b
}

// Paused reports whether the fleet is paused by its budget, as of the Lease last read (at the last
// write or renewal): the agent must start no new task while it is. See the package documentation.
func (c *Client) Paused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.operator[heartbeatapi.AnnotationPaused] == "true"
}

// decimal is the form of a cost, as the AgentFleet API validates it.
var decimal = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// set sets the limit that the environment variable env names from its value v ("" is no limit),
// or leaves b as it is and says why v is not one.
func (b *Budget) set(env, v string) error {
	if env == heartbeatapi.EnvMaxTaskCost {
		if v != "" && !decimal.MatchString(v) {
			return errors.New("not a decimal cost such as 0.50")
		}
		b.MaxCost = v
		return nil
	}
	var n int64
	if v != "" {
		var err error
		n, err = strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errors.New("not a whole number, 0 or more")
		}
	}
	switch env {
	case heartbeatapi.EnvMaxStepsPerTask:
		b.MaxSteps = n
	case heartbeatapi.EnvMaxTokensPerTask:
		b.MaxTokens = n
	case heartbeatapi.EnvMaxTaskSeconds:
		if n > math.MaxInt64/int64(time.Second) {
			return errors.New("too many seconds")
		}
		b.MaxDuration = time.Duration(n) * time.Second
	}
	return nil
}

// Writes is how many times the Lease was written (or a write was tried), retries after a conflict
// included.
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
	renewTime := metav1.NewMicroTime(now)
	lease := c.lease
	if lease == nil {
		got, err := leases.Get(ctx, c.me, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			created, err := leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{
					Name: c.me, Namespace: c.namespace, Labels: map[string]string{heartbeatapi.LabelFleet: c.fleet}, Annotations: annotations,
				},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity: ptr.To(c.me), LeaseDurationSeconds: ptr.To(int32(c.interval.Seconds())),
					AcquireTime: &renewTime, RenewTime: &renewTime,
				},
			}, metav1.CreateOptions{})
			if err == nil {
				c.read(created)
			}
			return wrap(err)
		case err != nil:
			return wrap(err)
		}
		c.read(got)
		lease = got
	}
	// One write per renewal: the Lease last written is updated in place.
	updated, err := leases.Update(ctx, c.renewed(lease, annotations, renewTime), metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		// Someone wrote the Lease since: the operator, with a directive. Read it and write again
		// now, rather than at the next interval, so that no renewal is lost to a directive.
		got, getErr := leases.Get(ctx, c.me, metav1.GetOptions{})
		if getErr != nil {
			err = getErr
		} else {
			c.read(got)
			c.mu.Lock()
			c.writes++
			c.mu.Unlock()
			updated, err = leases.Update(ctx, c.renewed(got, annotations, renewTime), metav1.UpdateOptions{})
		}
	}
	if err != nil {
		// A Lease deleted (the operator deletes a replaced worker's), or conflicting again: the next
		// write reads it first.
		c.lease = nil
		return wrap(err)
	}
	c.read(updated)
	return nil
}

// renewed is lease as this write makes it: the client's annotations (own) replace those it owns,
// and every other annotation and label stays, the operator's directives among them.
func (c *Client) renewed(lease *coordinationv1.Lease, own map[string]string, renewTime metav1.MicroTime) *coordinationv1.Lease {
	l := lease.DeepCopy()
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[heartbeatapi.LabelFleet] = c.fleet
	annotations := make(map[string]string, len(l.Annotations)+len(own))
	for k, v := range l.Annotations {
		if !owned[k] {
			annotations[k] = v
		}
	}
	for k, v := range own {
		annotations[k] = v
	}
	l.Annotations = annotations
	l.Spec.HolderIdentity = ptr.To(c.me)
	l.Spec.RenewTime = &renewTime
	return l
}

// read records lease as the last read (or written): the next write starts from it, and its
// directives are the ones in force. Called with writeMu held.
func (c *Client) read(lease *coordinationv1.Lease) {
	c.lease = lease
	operator := map[string]string{}
	for k, v := range lease.Annotations {
		if !owned[k] {
			operator[k] = v
		}
	}
	c.mu.Lock()
	c.operator = operator
	c.mu.Unlock()
}

// wrap names the Lease in an error; the end of a ctx (the agent shutting down) is none.
func wrap(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("heartbeat: writing the Lease: %w", err)
}
