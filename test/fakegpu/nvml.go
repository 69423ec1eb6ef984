// Package fakegpu runs AgentFleet's GPU health agent for a kwok node of the local cluster
// (test/cluster): the agent's own command (internal/gpuagent) over go-nvml's mock of NVML, whose GPUs
// a test breaks and mends through a small HTTP control surface, and a fake kubelet pod-resources API
// (the real gRPC protocol, on a unix socket) that says which pod on the node holds which GPU.
//
// Nothing here is in the shipped agent: the binary is test/fakegpu/cmd/fake-gpu-agent.
package fakegpu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// UUID is the UUID of the fake GPU at index i: GPU-0, GPU-1, …
func UUID(i int) string { return fmt.Sprintf("GPU-%d", i) }

// NVML is go-nvml's mock library over n healthy GPUs; InjectXID and Clear change them while the
// agent runs. XIDs reach the agent as NVML reports them: through the event set it waits on.
type NVML struct {
	Lib *mock.Interface

	mu   sync.Mutex
	gpus []*fakeGPU
	// events carries the injected XID events to the event set's Wait.
	events chan nvml.EventData
}

type fakeGPU struct {
	uuid string
	dev  *mock.Device
	// lost: every call answers ERROR_GPU_IS_LOST, as a GPU that fell off the bus does.
	lost bool
	// eccUncorrected is the volatile uncorrectable ECC count.
	eccUncorrected uint64
}

// NewNVML returns a mock NVML of n idle, healthy GPUs named product.
func NewNVML(n int, product string) *NVML {
	f := &NVML{events: make(chan nvml.EventData, 1024)}
	for i := range n {
		g := &fakeGPU{uuid: UUID(i)}
		g.dev = f.device(g, product)
		f.gpus = append(f.gpus, g)
	}
	set := &mock.EventSet{
		WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
			select {
			case e := <-f.events:
				return e, nvml.SUCCESS
			default:
			}
			if ms == 0 {
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
			t := time.NewTimer(time.Duration(ms) * time.Millisecond)
			defer t.Stop()
			select {
			case e := <-f.events:
				return e, nvml.SUCCESS
			case <-t.C:
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	f.Lib = &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(f.gpus), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(f.gpus) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return f.gpus[i].dev, nvml.SUCCESS
		},
		EventSetCreateFunc: func() (nvml.EventSet, nvml.Return) { return set, nvml.SUCCESS },
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(string) error { return nil }}
		},
	}
	return f
}

// device is the mock of one GPU: an idle H100-like GPU unless lost or with ECC errors.
func (f *NVML) device(g *fakeGPU, product string) *mock.Device {
	ret := func() nvml.Return {
		f.mu.Lock()
		defer f.mu.Unlock()
		if g.lost {
			return nvml.ERROR_GPU_IS_LOST
		}
		return nvml.SUCCESS
	}
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return g.uuid, ret() },
		GetNameFunc: func() (string, nvml.Return) { return product, ret() },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 << 30, Used: 1 << 30, Free: 79 << 30}, ret()
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: 30, Memory: 10}, ret()
		},
		GetTemperatureFunc:                  func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 40, ret() },
		GetPowerUsageFunc:                   func() (uint32, nvml.Return) { return 120_000, ret() },
		GetCurrentClocksEventReasonsFunc:    func() (uint64, nvml.Return) { return 0, ret() },
		GetCurrentClocksThrottleReasonsFunc: func() (uint64, nvml.Return) { return 0, ret() },
		GetTotalEccErrorsFunc: func(t nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
			r := ret()
			f.mu.Lock()
			defer f.mu.Unlock()
			if t == nvml.MEMORY_ERROR_TYPE_UNCORRECTED {
				return g.eccUncorrected, r
			}
			return 0, r
		},
		GetRemappedRowsFunc: func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, ret() },
		GetRetiredPagesPendingStatusFunc: func() (nvml.EnableState, nvml.Return) {
			return nvml.FEATURE_DISABLED, ret()
		},
		GetSupportedEventTypesFunc: func() (uint64, nvml.Return) {
			return nvml.EventTypeXidCriticalError | nvml.EventTypeSingleBitEccError | nvml.EventTypeDoubleBitEccError, ret()
		},
		RegisterEventsFunc: func(uint64, nvml.EventSet) nvml.Return { return ret() },
	}
}

// Fault is what the control surface injects into one GPU.
type Fault struct {
	GPU int `json:"gpu"`
	// XID, if not zero, is sent as an XID event (EventTypeXidCriticalError) through the event set.
	XID uint64 `json:"xid,omitempty"`
	// Lost makes the GPU answer ERROR_GPU_IS_LOST until cleared, as after XID 79 (fallen off the bus).
	Lost bool `json:"lost,omitempty"`
	// ECCUncorrected adds volatile uncorrectable ECC errors.
	ECCUncorrected uint64 `json:"eccUncorrected,omitempty"`
}

// Inject applies a fault: the GPU's state first, then its XID event, so that the poll the event
// wakes sees both.
func (f *NVML) Inject(in Fault) error {
	f.mu.Lock()
	if in.GPU < 0 || in.GPU >= len(f.gpus) {
		f.mu.Unlock()
		return fmt.Errorf("no GPU %d: there are %d", in.GPU, len(f.gpus))
	}
	g := f.gpus[in.GPU]
	g.lost = g.lost || in.Lost
	g.eccUncorrected += in.ECCUncorrected
	f.mu.Unlock()
	if in.XID != 0 {
		select {
		case f.events <- nvml.EventData{
			Device: g.dev, EventType: nvml.EventTypeXidCriticalError, EventData: in.XID,
			GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF,
		}:
		default:
			return fmt.Errorf("the XID event queue is full")
		}
	}
	return nil
}

// Clear mends a GPU: it answers again. Counters are not reset, as on a real GPU; the agent judges
// their increase.
func (f *NVML) Clear(i int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i < 0 || i >= len(f.gpus) {
		return fmt.Errorf("no GPU %d: there are %d", i, len(f.gpus))
	}
	f.gpus[i].lost = false
	return nil
}

// Handler is the control surface, on loopback: POST /fault with a Fault, POST /clear with
// {"gpu": i}; GET /healthz.
func (f *NVML) Handler() http.Handler {
	mux := http.NewServeMux()
	decode := func(w http.ResponseWriter, r *http.Request) (Fault, bool) {
		var in Fault
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err == nil {
			err = json.Unmarshal(body, &in)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return in, false
		}
		return in, true
	}
	mux.HandleFunc("POST /fault", func(w http.ResponseWriter, r *http.Request) {
		if in, ok := decode(w, r); ok {
			if err := f.Inject(in); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
			}
		}
	})
	mux.HandleFunc("POST /clear", func(w http.ResponseWriter, r *http.Request) {
		if in, ok := decode(w, r); ok {
			if err := f.Clear(in.GPU); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
			}
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	return mux
}
