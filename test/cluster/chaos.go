package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Faults of the control plane itself, for the chaos tests (make test-chaos): etcd paused, the API
// server restarted with its data kept.

// EtcdPid is the process id of the cluster's etcd (envtest runs it; its client URL tells it from
// another test cluster's on the same machine).
func (c *Cluster) EtcdPid() (int, error) {
	etcd := c.env.ControlPlane.Etcd
	if etcd == nil || etcd.URL == nil {
		return 0, &PartError{Part: "etcd", Err: errors.New("not started")}
	}
	return findProcess("etcd", etcd.URL.Host)
}

// findProcess is the process whose program is named base and whose command line holds needle.
func findProcess(base, needle string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, &PartError{Part: base, Err: err}
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // gone meanwhile
		}
		args := bytes.Split(cmdline, []byte{0})
		if len(args) > 0 && filepath.Base(string(args[0])) == base && bytes.Contains(cmdline, []byte(needle)) {
			return pid, nil
		}
	}
	return 0, &PartError{Part: base, Err: fmt.Errorf("no %s process with %q in its command line", base, needle)}
}

// PauseEtcd stops etcd (SIGSTOP) for d and lets it go on (SIGCONT), as a disk that stalls would:
// the API server's requests hang meanwhile. It returns once etcd runs again.
func (c *Cluster) PauseEtcd(d time.Duration) error {
	pid, err := c.EtcdPid()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return &PartError{Part: "etcd", Err: fmt.Errorf("pausing pid %d: %w", pid, err)}
	}
	time.Sleep(d)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return &PartError{Part: "etcd", Err: fmt.Errorf("resuming pid %d: %w", pid, err)}
	}
	return nil
}

// RestartAPIServer stops kube-apiserver, keeps it down for down, and starts it again on the same
// port, certificates and service-account keys (its folder is the cluster's, not a temporary one),
// with etcd and its data kept; it returns once the API server is healthy again.
func (c *Cluster) RestartAPIServer(ctx context.Context, down time.Duration) error {
	api := c.env.ControlPlane.APIServer
	if api == nil {
		return &PartError{Part: "kube-apiserver", Err: errors.New("not started")}
	}
	if api.CertDir == "" {
		return &PartError{Part: "kube-apiserver", Err: errors.New("its certificates are in a temporary folder a restart would lose")}
	}
	// Killed, as a crashed or OOM-killed API server is (a graceful stop under load can outlast
	// envtest's patience): etcd keeps what it had written.
	pid, err := findProcess("kube-apiserver", "--secure-port="+api.Port)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return &PartError{Part: "kube-apiserver", Err: fmt.Errorf("killing pid %d: %w", pid, err)}
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return api.Stop() == nil, nil // nil once envtest saw it exit
	}); err != nil {
		return &PartError{Part: "kube-apiserver", Err: fmt.Errorf("pid %d still there after SIGKILL: %w", pid, err)}
	}
	time.Sleep(down)
	if err := api.Start(); err != nil {
		return &PartError{Part: "kube-apiserver", Log: c.LogPath("kube-apiserver"), Tail: tail(c.LogPath("kube-apiserver"), 15), Err: fmt.Errorf("starting again: %w", err)}
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var namespaces corev1.NamespaceList
		return c.Client.List(ctx, &namespaces) == nil, nil
	})
}
