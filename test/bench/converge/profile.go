package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// profileChunk is the length of each CPU profile taken during a phase. The pprof endpoint
// profiles for a length given up front, and a phase's length is not known, so the phase is
// covered by chunks that `go tool pprof` merges when given them together.
const profileChunk = 10 * time.Second

// profiler takes CPU profiles, into dir, of our operator (through its --pprof-bind-address) and of
// kube-apiserver (its /debug/pprof, as the cluster's admin): where the time of a phase goes.
type profiler struct {
	dir string
	// targets are each profiled process's pprof base URL and the client that reaches it.
	targets map[string]profileTarget
}

type profileTarget struct {
	base   string
	client *http.Client
}

// newProfiler profiles our operator at ourPprof (cluster.PprofURL) and kube-apiserver as apiServer's user.
func newProfiler(dir, ourPprof string, apiServer *rest.Config) (*profiler, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	cfg := rest.CopyConfig(apiServer)
	cfg.Timeout = profileChunk + time.Minute
	api, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("a client for kube-apiserver's pprof: %w", err)
	}
	return &profiler{dir: dir, targets: map[string]profileTarget{
		ourOperator:      {base: ourPprof, client: &http.Client{Timeout: profileChunk + time.Minute}},
		"kube-apiserver": {base: strings.TrimSuffix(apiServer.Host, "/"), client: api},
	}}, nil
}

// during profiles every target from now until stop is called, in profileChunk pieces named
// <target>-<prefix>-<k>.pprof; stop waits for the pieces under way and returns the files written.
// Calls of stop after the first return nothing, so that a phase may defer it and call it too.
func (p *profiler) during(ctx context.Context, prefix string) (stop func() ([]string, error)) {
	ctx, cancel := context.WithCancel(ctx)
	type result struct {
		files []string
		err   error
	}
	results := make(chan result, len(p.targets))
	for name, t := range p.targets {
		go func() {
			var r result
			for k := 1; ctx.Err() == nil; k++ {
				path := filepath.Join(p.dir, fmt.Sprintf("%s-%s-%d.pprof", name, prefix, k))
				if r.err = t.take(path); r.err != nil {
					r.err = fmt.Errorf("profiling %s: %w", name, r.err)
					break
				}
				r.files = append(r.files, path)
			}
			results <- r
		}()
	}
	var once sync.Once
	return func() (files []string, err error) {
		once.Do(func() {
			cancel()
			var errs []error
			for range p.targets {
				r := <-results
				files = append(files, r.files...)
				errs = append(errs, r.err)
			}
			err = errors.Join(errs...)
		})
		return files, err
	}
}

// take writes one CPU profile of profileChunk to path. It is not cancelled with the phase: the
// endpoint answers only at the end of the chunk, and a profile cut short is lost.
func (t profileTarget) take(path string) error {
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", t.base, int(profileChunk.Seconds()))
	resp, err := t.client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
