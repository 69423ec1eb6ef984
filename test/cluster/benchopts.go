package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// PartArgs returns the flags the latest process of a part was started with, e.g. to read the
// address KubeRay's operator serves its metrics at (--metrics-addr).
func (c *Cluster) PartArgs(name string) ([]string, error) {
	p, err := c.part(name)
	if err != nil {
		return nil, err
	}
	return slices.Clone(p.args), nil
}

// PartFlag is the value of a part's flag --name=value, the last one given; "" when it has none.
func (c *Cluster) PartFlag(part, name string) (string, error) {
	args, err := c.PartArgs(part)
	if err != nil {
		return "", err
	}
	value := ""
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			value = v
		}
	}
	return value, nil
}

// RestartPartWithArgs stops a part and starts it again with extra flags after those it was started
// with (the last of a repeated flag wins), appending to its log, and waits until it is ready. A
// benchmark tunes a part this way (KubeRay's --reconcile-concurrency, kube-scheduler's
// --kube-api-qps) without a cluster option for every flag of every part. Later RestartPart calls
// keep the extra flags.
func (c *Cluster) RestartPartWithArgs(ctx context.Context, name string, extra ...string) error {
	old, err := c.part(name)
	if err != nil {
		return err
	}
	old.stop(15 * time.Second)
	c.mu.Lock()
	i := c.partIndex(name)
	if i < 0 || c.procs[i] != old {
		c.mu.Unlock()
		return &PartError{Part: name, Log: old.logPath, Err: errors.New("restarted by someone else meanwhile")}
	}
	args := append(slices.Clone(old.args), extra...)
	p, err := startProcess(name, old.bin, c.Dir, args, old.env, old.ready, true)
	if err == nil {
		c.procs[i] = p
	}
	c.mu.Unlock()
	if err != nil {
		return &PartError{Part: name, Log: old.logPath, Err: err}
	}
	return c.waitReady(ctx, p)
}
