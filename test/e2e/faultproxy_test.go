package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// faultProxy sits between an operator process and the API server and kills the operator
// (SIGKILL) at the one boundary a test names: the write that hands workers to KubeRay. The
// operator has no hook for it; it sees a connection that is cut, as it would on a node failure.
//
// A handover is a PATCH of a RayCluster (not a subresource) whose body lists, in some worker group's
// scaleStrategy.workersToDelete, a worker the proxy has not seen handed over (or killed over)
// before: a write that only repeats names already handed over is not a new replacement. Each arm
// is used by one handover.
//
// After a kill, every request on a connection opened before it is refused: the dead process's
// requests already in the proxy must not reach the API server after it died.
type faultProxy struct {
	upstream *httputil.ReverseProxy
	kill     func() (pid int, err error) // kills the operator and returns once it has exited
	log      *log.Logger
	srv      *http.Server
	url      string

	// gate is the cut: a kill holds it, and every request reads the epoch (the number of kills so
	// far) under it, so that no request of the killed process goes through while it dies.
	gate  sync.RWMutex
	epoch int

	mu     sync.Mutex
	arms   []killMode
	seen   sets.Set[string] // workers named in handovers forwarded with success, or killed over
	kills  []proxyKill
	refuse int // requests refused because their process was killed
}

// killMode is when, relative to forwarding the handover, the operator is killed.
type killMode int

const (
	// killBeforeForward: the handover never reaches the API server. With the ledger written
	// first, the operator dies between its two writes: recorded, not handed over.
	killBeforeForward killMode = iota
	// killAfterForward: the handover is applied and the operator never learns it was. An
	// operator that hands over before it records dies between its two writes here.
	killAfterForward
)

func (m killMode) String() string {
	if m == killAfterForward {
		return "after forwarding"
	}
	return "before forwarding"
}

// proxyKill is one kill the proxy made.
type proxyKill struct {
	Pid      int
	Mode     killMode
	Path     string
	Workers  []string // workersToDelete of the killed handover
	Upstream int      // the API server's status for the handover; 0 if it was not forwarded
}

type connEpochKey struct{}

// startFaultProxy serves a proxy to the API server of cfg on a loopback port, logging to logPath.
// kill is called, at most once per arm, to kill the operator behind it.
func startFaultProxy(t *testing.T, cfg *rest.Config, logPath string, kill func() (int, error)) *faultProxy {
	t.Helper()
	target, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		t.Fatalf("the API server's URL: %v", err)
	}
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatalf("a transport to the API server: %v", err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{kill: kill, log: log.New(logFile, "", log.LstdFlags|log.Lmicroseconds), seen: sets.New[string]()}
	p.upstream = &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     transport, // the admin's credentials: the operator's side has none
		FlushInterval: -1,        // watches stream event by event
		ErrorLog:      p.log,
		ModifyResponse: func(resp *http.Response) error {
			if names, ok := resp.Request.Context().Value(handoverKey{}).([]string); ok && resp.StatusCode < 300 {
				p.mu.Lock()
				p.seen.Insert(names...)
				p.mu.Unlock()
			}
			return nil
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.url = "http://" + l.Addr().String()
	p.srv = &http.Server{
		Handler:           p,
		ErrorLog:          p.log,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			p.gate.RLock()
			defer p.gate.RUnlock()
			return context.WithValue(ctx, connEpochKey{}, p.epoch)
		},
	}
	go func() {
		if err := p.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Printf("serving: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = p.srv.Close()
		_ = logFile.Close()
	})
	return p
}

type handoverKey struct{}

// arm makes the next handovers kill the operator, one per mode, in order.
func (p *faultProxy) arm(modes ...killMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.arms = append(p.arms, modes...)
}

// killed returns the kills made so far.
func (p *faultProxy) killed() []proxyKill {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.kills)
}

// kubeconfig writes a kubeconfig for the proxy (plain HTTP on loopback, no credentials) to path.
func (p *faultProxy) kubeconfig(t *testing.T, path string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["faultproxy"] = &clientcmdapi.Cluster{Server: p.url}
	cfg.AuthInfos["operator"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["faultproxy"] = &clientcmdapi.Context{Cluster: "faultproxy", AuthInfo: "operator"}
	cfg.CurrentContext = "faultproxy"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.gate.RLock()
	dead := r.Context().Value(connEpochKey{}).(int) < p.epoch
	p.gate.RUnlock()
	if dead {
		p.mu.Lock()
		p.refuse++
		p.mu.Unlock()
		p.log.Printf("refused %s %s: its operator was killed", r.Method, r.URL.Path)
		http.Error(w, "fault proxy: the operator that sent this was killed", http.StatusServiceUnavailable)
		return
	}
	names, err := handoverNames(r)
	if err != nil {
		p.log.Printf("reading %s %s: %v", r.Method, r.URL.Path, err)
		http.Error(w, "fault proxy: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(names) == 0 {
		p.upstream.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	isNew := !p.seen.HasAll(names...)
	var mode killMode
	armed := isNew && len(p.arms) > 0
	if armed {
		mode, p.arms = p.arms[0], p.arms[1:]
		p.seen.Insert(names...)
	}
	p.mu.Unlock()
	r = r.WithContext(context.WithValue(r.Context(), handoverKey{}, names))
	if !armed {
		p.log.Printf("forwarding handover %v (new: %t)", names, isNew)
		p.upstream.ServeHTTP(w, r)
		return
	}
	p.gate.Lock()
	k := proxyKill{Mode: mode, Path: r.URL.Path, Workers: names}
	if mode == killAfterForward {
		rec := httptest.NewRecorder()
		p.upstream.ServeHTTP(rec, r)
		k.Upstream = rec.Code
	}
	k.Pid, err = p.kill()
	p.recordKill(k, err)
	p.epoch++
	p.gate.Unlock()
	http.Error(w, "fault proxy: the operator was killed at this handover", http.StatusServiceUnavailable)
}

func (p *faultProxy) recordKill(k proxyKill, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.log.Printf("killing the operator at handover %v (%s): %v", k.Workers, k.Mode, err)
		return
	}
	p.kills = append(p.kills, k)
	p.log.Printf("killed the operator (pid %d) %s handover %v of %s (API server answered %d)", k.Pid, k.Mode, k.Workers, k.Path, k.Upstream)
}

// handoverNames returns the workers a PATCH of a RayCluster (not of a subresource) lists in
// workersToDelete, leaving the request's body readable again; none for any other request.
func handoverNames(r *http.Request) ([]string, error) {
	if r.Method != http.MethodPatch {
		return nil, nil
	}
	// /apis/ray.io/<version>/namespaces/<ns>/rayclusters/<name>
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 7 || parts[0] != "apis" || parts[1] != "ray.io" || parts[3] != "namespaces" || parts[5] != "rayclusters" {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	// A merge patch (JSON) or an apply patch (YAML): sigs.k8s.io/yaml reads both.
	var patch struct {
		Spec struct {
			WorkerGroupSpecs []struct {
				ScaleStrategy struct {
					WorkersToDelete []string `json:"workersToDelete"`
				} `json:"scaleStrategy"`
			} `json:"workerGroupSpecs"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(body, &patch); err != nil {
		return nil, nil //nolint:nilerr // not a patch of that shape (a JSON patch is a list): not a handover
	}
	var names []string
	for _, g := range patch.Spec.WorkerGroupSpecs {
		names = append(names, g.ScaleStrategy.WorkersToDelete...)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
