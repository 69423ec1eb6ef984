package heartbeat

// RenewalsStopped returns a channel closed when the renewals Start began have stopped, so that a
// test can tell "stopped" from "not yet".
func RenewalsStopped(c *Client) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.renewing
}
