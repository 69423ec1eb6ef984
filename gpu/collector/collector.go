// Package collector reads the health of a node's NVIDIA GPUs from NVML, judges each one (gpu.Judge)
// and tracks its recovery (gpu.Health). It is the NVML side of the GPU health agent.
//
// It is a package of its own because go-nvml needs cgo: importing it from package gpu would make
// every importer of gpu's labels, the operator included, a cgo binary.
package collector

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/utils/clock"

	"github.com/agentfleet/agentfleet/gpu"
)

// NVML is the part of go-nvml's nvml.Interface the collector calls; nvml.New() and go-nvml's mock
// (github.com/NVIDIA/go-nvml/pkg/nvml/mock) satisfy it.
type NVML interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
	EventSetCreate() (nvml.EventSet, nvml.Return)
	// Extensions().LookupSymbol tells whether the driver has a function: calling one it lacks kills
	// the process (go-nvml binds symbols lazily).
	Extensions() nvml.ExtendedInterface
}

// Device is the part of nvml.Device the collector calls.
type Device interface {
	GetUUID() (string, nvml.Return)
	GetName() (string, nvml.Return)
	GetMemoryInfo() (nvml.Memory, nvml.Return)
	GetUtilizationRates() (nvml.Utilization, nvml.Return)
	GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return)
	GetPowerUsage() (uint32, nvml.Return)
	GetCurrentClocksEventReasons() (uint64, nvml.Return)
	// GetCurrentClocksThrottleReasons is the same call under its name before driver R535.
	GetCurrentClocksThrottleReasons() (uint64, nvml.Return)
	GetTotalEccErrors(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return)
	GetRemappedRows() (corrRows int, uncRows int, isPending bool, failureOccurred bool, ret nvml.Return)
	GetRetiredPagesPendingStatus() (nvml.EnableState, nvml.Return)
	GetSupportedEventTypes() (uint64, nvml.Return)
	RegisterEvents(uint64, nvml.EventSet) nvml.Return
}

// maxEventsPerPoll bounds how many XID events one poll drains, so an XID storm cannot hold a poll.
const maxEventsPerPoll = 1024

// Options configure a Collector; the zero Options are gpu.DefaultPolicy and gpu.DefaultRecoveryPolicy.
type Options struct {
	Policy   *gpu.Policy
	Recovery *gpu.RecoveryPolicy
}

// Collector polls every GPU of the node. It is not safe for concurrent use: one loop calls WaitXIDs
// and Poll in turn.
type Collector struct {
	lib      NVML
	clock    clock.PassiveClock
	policy   gpu.Policy
	recovery gpu.RecoveryPolicy

	devices []*device
	// events is the XID event set (nvml.EventSet: RegisterEvents takes no narrower type); the
	// collector calls its Wait and Free.
	events nvml.EventSet
	// eventsErr is why XID events cannot be read (no event set), reported with every poll.
	eventsErr string
	// legacyClocks: the driver predates nvmlDeviceGetCurrentClocksEventReasons.
	legacyClocks bool
	started      bool
}

type device struct {
	index   int
	handle  Device // nil until NVML returns one
	uuid    string
	product string
	// registered: XID events are registered for this GPU, or it has none to register (an old or
	// virtual GPU); registerErr says why registering failed, and it is retried each probe.
	registered  bool
	registerErr string

	pendingXIDs []uint64
	prev        gpu.Sample // the latest probed sample, for counter increases
	health      gpu.Health
}

// New returns a Collector over lib; Start initialises NVML.
func New(lib NVML, clk clock.PassiveClock, o Options) *Collector {
	c := &Collector{lib: lib, clock: clk, policy: gpu.DefaultPolicy(), recovery: gpu.DefaultRecoveryPolicy()}
	if o.Policy != nil {
		c.policy = *o.Policy
	}
	if o.Recovery != nil {
		c.recovery = *o.Recovery
	}
	return c
}

// Report is one poll of every GPU.
type Report struct {
	Time time.Time
	GPUs []GPU
	// Errors are problems of the collection as a whole, such as XID events that cannot be read.
	Errors []string
}

// GPU is one GPU in a Report.
type GPU struct {
	Sample gpu.Sample
	// Verdict is this poll's judgement (on XID events alone when Sample.Probed is false: the GPU is in
	// its back-off); Health is what to publish, after recovery.
	Verdict gpu.Verdict
	Health  gpu.Health
}

// Start initialises NVML, finds the GPUs and registers for their XID events. Without a driver it
// returns an error that says so. A GPU that does not answer is not an error: it is reported lost.
func (c *Collector) Start() error {
	if ret := c.lib.Init(); ret != nvml.SUCCESS {
		return initError(ret)
	}
	n, ret := c.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		err := fmt.Errorf("counting GPUs with NVML: %w", ret)
		if sret := c.lib.Shutdown(); sret != nvml.SUCCESS {
			err = errors.Join(err, fmt.Errorf("shutting down NVML: %w", sret))
		}
		return err
	}
	if ext := c.lib.Extensions(); ext != nil {
		c.legacyClocks = ext.LookupSymbol("nvmlDeviceGetCurrentClocksEventReasons") != nil
	}
	c.devices = make([]*device, n)
	for i := range c.devices {
		d := &device{index: i}
		c.devices[i] = d
		c.identify(d)
	}
	set, ret := c.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		c.eventsErr = fmt.Sprintf("xid events unavailable: creating the NVML event set: %v", ret)
	} else {
		c.events = set
		for _, d := range c.devices {
			c.register(d)
		}
	}
	c.started = true
	return nil
}

// initError explains the usual reasons NVML does not start on a node.
func initError(ret nvml.Return) error {
	var why string
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		why = "libnvidia-ml.so.1 not found: is the NVIDIA driver installed, and its library mounted into this container?"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		why = "the NVIDIA kernel driver is not loaded"
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		why = "libnvidia-ml and the loaded NVIDIA kernel driver are different versions (driver upgraded without a reboot?)"
	case nvml.ERROR_NO_PERMISSION:
		why = "no permission to open the NVIDIA devices"
	default:
		return fmt.Errorf("initializing NVML: %w", ret)
	}
	return fmt.Errorf("initializing NVML: %s: %w", why, ret)
}

// identify gets the GPU's handle, UUID and name, once each: they do not change.
func (c *Collector) identify(d *device) (lost, resetRequired bool, errs []string) {
	check := func(call string, ret nvml.Return) bool {
		switch ret {
		case nvml.SUCCESS:
			return true
		case nvml.ERROR_GPU_IS_LOST:
			lost = true
		case nvml.ERROR_RESET_REQUIRED:
			resetRequired = true
		case nvml.ERROR_NOT_SUPPORTED:
		default:
			errs = append(errs, fmt.Sprintf("%s: %v", call, ret))
		}
		return false
	}
	if d.handle == nil {
		h, ret := c.lib.DeviceGetHandleByIndex(d.index)
		if !check("DeviceGetHandleByIndex", ret) {
			return lost, resetRequired, errs
		}
		d.handle = h
	}
	if d.uuid == "" {
		if uuid, ret := d.handle.GetUUID(); check("GetUUID", ret) {
			d.uuid = uuid
		} else if lost {
			return lost, resetRequired, errs
		}
	}
	if d.product == "" {
		if name, ret := d.handle.GetName(); check("GetName", ret) {
			d.product = name
		}
	}
	return lost, resetRequired, errs
}

// register asks for the GPU's XID events, as NVIDIA's device plugin does; ECC events are not
// needed, the counters are read every poll.
func (c *Collector) register(d *device) {
	if d.handle == nil || d.registered || c.events == nil {
		return
	}
	supported, ret := d.handle.GetSupportedEventTypes()
	switch {
	case ret == nvml.ERROR_NOT_SUPPORTED, ret == nvml.SUCCESS && supported&nvml.EventTypeXidCriticalError == 0:
		d.registered, d.registerErr = true, ""
		return
	case ret != nvml.SUCCESS:
		d.registerErr = fmt.Sprintf("xid events unavailable: GetSupportedEventTypes: %v", ret)
		return
	}
	switch ret := d.handle.RegisterEvents(nvml.EventTypeXidCriticalError, c.events); ret {
	case nvml.SUCCESS, nvml.ERROR_NOT_SUPPORTED:
		d.registered, d.registerErr = true, ""
	default:
		d.registerErr = fmt.Sprintf("xid events unavailable: RegisterEvents: %v", ret)
	}
}

// WaitXIDs waits up to timeout for an XID event and returns whether one arrived; the events are kept
// for the next Poll. A loop that calls it between polls, and polls at once when it returns true,
// publishes an XID within one NVML wait instead of one poll interval.
func (c *Collector) WaitXIDs(timeout time.Duration) bool {
	if c.events == nil {
		return false
	}
	ms := uint32(min(max(timeout.Milliseconds(), 0), int64(^uint32(0))))
	got := false
	for range maxEventsPerPoll {
		e, ret := c.events.Wait(ms)
		if ret != nvml.SUCCESS {
			break
		}
		got = c.take(e) || got
		ms = 0 // take what else is queued, without waiting again
	}
	return got
}

// drain takes the queued events without waiting.
func (c *Collector) drain() []string {
	if c.events == nil {
		return nil
	}
	for range maxEventsPerPoll {
		e, ret := c.events.Wait(0)
		switch ret {
		case nvml.SUCCESS:
			c.take(e)
		case nvml.ERROR_TIMEOUT:
			return nil
		default:
			// Each GPU is probed on its own; a lost one shows there.
			return []string{fmt.Sprintf("reading xid events: %v", ret)}
		}
	}
	return nil
}

// take files an XID event under its GPU.
func (c *Collector) take(e nvml.EventData) bool {
	if e.EventType&nvml.EventTypeXidCriticalError == 0 {
		return false
	}
	d := c.deviceOf(e.Device)
	if d == nil {
		return false
	}
	d.pendingXIDs = append(d.pendingXIDs, e.EventData)
	return true
}

// deviceOf finds the GPU of an event: by handle (NVML hands out one per GPU, and it works when the
// GPU no longer answers), else by UUID.
func (c *Collector) deviceOf(h nvml.Device) *device {
	if h == nil {
		return nil
	}
	if reflect.TypeOf(h).Comparable() {
		for _, d := range c.devices {
			if d.handle != nil && d.handle == h {
				return d
			}
		}
	}
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		return nil
	}
	for _, d := range c.devices {
		if d.uuid == uuid {
			return d
		}
	}
	return nil
}

// Poll reads every GPU whose probe is due and the XID events since the last poll, and judges each
// GPU. A GPU that does not answer does not stop the others.
func (c *Collector) Poll() Report {
	now := c.clock.Now()
	r := Report{Time: now, GPUs: make([]GPU, len(c.devices))}
	if !c.started {
		r.Errors = append(r.Errors, "collector not started")
		return r
	}
	if c.eventsErr != "" {
		r.Errors = append(r.Errors, c.eventsErr)
	}
	r.Errors = append(r.Errors, c.drain()...)
	for i, d := range c.devices {
		var s gpu.Sample
		probed := d.health.ProbeDue(now)
		if probed {
			s = c.probe(d)
		} else {
			s = gpu.Sample{Index: d.index, UUID: d.uuid, Product: d.product}
		}
		s.XIDs = d.pendingXIDs
		d.pendingXIDs = nil
		v := gpu.Judge(d.prev, s, c.policy)
		if probed {
			d.prev = s
		}
		d.health = d.health.Step(now, v, probed, c.recovery)
		r.GPUs[i] = GPU{Sample: s, Verdict: v, Health: d.health}
	}
	return r
}

// probe asks one GPU everything; it stops at the first sign the GPU is lost.
func (c *Collector) probe(d *device) gpu.Sample {
	s := gpu.Sample{Index: d.index, Probed: true}
	s.Lost, s.ResetRequired, s.Errors = c.identify(d)
	s.UUID, s.Product = d.uuid, d.product
	if d.handle == nil || s.Lost {
		return s
	}
	c.register(d) // a GPU that had no handle at Start has one now
	if d.registerErr != "" {
		s.Errors = append(s.Errors, d.registerErr)
	}
	p := prober{s: &s}
	h := d.handle

	if m, ret := h.GetMemoryInfo(); p.ok("GetMemoryInfo", ret) {
		s.MemoryTotalBytes, s.MemoryUsedBytes = gpu.Valid(m.Total), gpu.Valid(m.Used)
	}
	if p.lost() {
		return s
	}
	if u, ret := h.GetUtilizationRates(); p.ok("GetUtilizationRates", ret) {
		s.UtilizationGPUPercent, s.UtilizationMemoryPercent = gpu.Valid(u.Gpu), gpu.Valid(u.Memory)
	}
	if p.lost() {
		return s
	}
	if t, ret := h.GetTemperature(nvml.TEMPERATURE_GPU); p.ok("GetTemperature", ret) {
		s.TemperatureC = gpu.Valid(t)
	}
	if p.lost() {
		return s
	}
	if w, ret := h.GetPowerUsage(); p.ok("GetPowerUsage", ret) {
		s.PowerMilliwatts = gpu.Valid(w)
	}
	if p.lost() {
		return s
	}
	getReasons, call := h.GetCurrentClocksEventReasons, "GetCurrentClocksEventReasons"
	if c.legacyClocks {
		getReasons, call = h.GetCurrentClocksThrottleReasons, "GetCurrentClocksThrottleReasons"
	}
	if reasons, ret := getReasons(); p.ok(call, ret) {
		s.ClockEventReasons = gpu.Valid(reasons)
	}
	if p.lost() {
		return s
	}
	if n, ret := h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC); p.ok("GetTotalEccErrors(uncorrected)", ret) {
		s.ECCUncorrectedVolatile = gpu.Valid(n)
	}
	if p.lost() {
		return s
	}
	if n, ret := h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC); p.ok("GetTotalEccErrors(corrected)", ret) {
		s.ECCCorrectedVolatile = gpu.Valid(n)
	}
	if p.lost() {
		return s
	}
	if _, _, pending, failed, ret := h.GetRemappedRows(); p.ok("GetRemappedRows", ret) {
		s.RowRemapPending, s.RowRemapFailure = gpu.Valid(pending), gpu.Valid(failed)
	}
	if p.lost() {
		return s
	}
	if st, ret := h.GetRetiredPagesPendingStatus(); p.ok("GetRetiredPagesPendingStatus", ret) {
		s.RetiredPagesPending = gpu.Valid(st == nvml.FEATURE_ENABLED)
	}
	return s
}

// prober sorts NVML's answers: a value, a field the GPU does not have (absent, not an error), a lost
// GPU, or an error.
type prober struct{ s *gpu.Sample }

func (p prober) ok(call string, ret nvml.Return) bool {
	switch ret {
	case nvml.SUCCESS:
		return true
	case nvml.ERROR_NOT_SUPPORTED:
	case nvml.ERROR_GPU_IS_LOST:
		p.s.Lost = true
	case nvml.ERROR_RESET_REQUIRED:
		p.s.ResetRequired = true
	default:
		p.s.Errors = append(p.s.Errors, fmt.Sprintf("%s: %v", call, ret))
	}
	return false
}

func (p prober) lost() bool { return p.s.Lost }

// Close frees the event set and shuts NVML down.
func (c *Collector) Close() error {
	var errs []error
	if c.events != nil {
		if ret := c.events.Free(); ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("freeing the NVML event set: %w", ret))
		}
		c.events = nil
	}
	if c.started {
		if ret := c.lib.Shutdown(); ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("shutting down NVML: %w", ret))
		}
		c.started = false
	}
	return errors.Join(errs...)
}
