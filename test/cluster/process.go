package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// process is one cluster part run as a child process, its output in a log file of its own.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	err     error         // what Wait returned; read only after done is closed

	// How it was started, so that it can be started again (Cluster.RestartPart).
	bin       string
	args, env []string
	ready     func(context.Context) bool
}

// startProcess starts bin with args, stdout and stderr in dir/<name>.log. The child gets a process
// group of its own, so that stop reaches anything it forks, and SIGKILL if this process dies first,
// so that a killed test leaves nothing behind. A restart appends to the log, after a line that
// says so, so that one log tells the part's whole story.
func startProcess(name, bin, dir string, args, env []string, ready func(context.Context) bool, restart bool) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if restart {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	logFile, err := os.OpenFile(logPath, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if restart {
		if _, err := fmt.Fprintf(logFile, "--- %s restarted by the test harness ---\n", name); err != nil {
			_ = logFile.Close()
			return nil, fmt.Errorf("restarting %s: %w", name, err)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{}), bin: bin, args: args, env: env, ready: ready}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, and SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if done, _ := p.exited(); done {
		return
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
	}
}

// failure describes a part that did not come up: its name, why, where its log is and the log's end.
func (p *process) failure(cause error) error {
	return &PartError{Part: p.name, Log: p.logPath, Tail: tail(p.logPath, 15), Err: cause}
}

// PartError says which part of the local cluster failed, and where to read why.
type PartError struct {
	Part string // e.g. "kube-scheduler"
	Log  string // path of its log file; empty for parts run in-process
	Tail string // the last lines of the log
	Err  error
}

func (e *PartError) Error() string {
	msg := fmt.Sprintf("local cluster: %s failed: %v", e.Part, e.Err)
	if e.Log != "" {
		msg += fmt.Sprintf(" (log: %s)", e.Log)
	}
	if e.Tail != "" {
		msg += "\n--- last lines of its log ---\n" + e.Tail
	}
	return msg
}

func (e *PartError) Unwrap() error { return e.Err }

// tail returns about the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	data = bytes.TrimRight(data, "\n")
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitFor polls check until it returns true, the process exits, or ctx ends.
func (p *process) waitFor(ctx context.Context, what string, check func(context.Context) bool) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if check(ctx) {
			return nil
		}
		if done, err := p.exited(); done {
			if err == nil {
				err = errors.New("exited with status 0")
			}
			return p.failure(fmt.Errorf("exited before %s: %w", what, err))
		}
		select {
		case <-ctx.Done():
			return p.failure(fmt.Errorf("not %s: %w", what, context.Cause(ctx)))
		case <-tick.C:
		}
	}
}
