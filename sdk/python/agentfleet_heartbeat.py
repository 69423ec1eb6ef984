"""AgentFleet's heartbeat contract for Python agents, in one file, on the official kubernetes client.

    from agentfleet_heartbeat import Heartbeat

    hb = Heartbeat.from_env()   # AGENTFLEET_FLEET, AGENTFLEET_NAMESPACE, AGENTFLEET_POD_NAME, AGENTFLEET_HEARTBEAT_INTERVAL
    hb.start()                  # keeps the Lease renewed from a daemon thread
    hb.step("search: kubernetes leases")  # at every step of a task
    hb.tokens(1200, 350)        # the model's tokens, as they are used (optional)
    hb.task_done(ok=True)       # when the task is done, with its outcome (or hb.idle(): no outcome)

Each worker keeps a coordination.k8s.io/v1 Lease named after its pod, labelled with its fleet, renewed
at least every interval, with its state, step counts, how many times in a row the same action was
taken (actions are compared by their SHA-256) and the time of its last step. The operator replaces
workers whose Lease goes stale (stalled) or whose counts pass the fleet's limits (looping).

Writes are coalesced as in the Go client (sdk/go/heartbeat): a step or tokens are written at once
when the last write is an interval old or when the step starts a task, otherwise with the next
renewal; a task's end is written at once. Task outcomes and tokens are annotated once reported.
"""

import datetime
import hashlib
import os
import threading

from kubernetes import client, config
from kubernetes.client.rest import ApiException

# The heartbeat contract, copied from the Go package github.com/agentfleet/agentfleet/api/heartbeat
# (api/heartbeat/heartbeat.go): each of its constants under its name in UPPER_SNAKE_CASE. A Go test
# there (python_test.go) fails when a name is missing here or a value differs.
LABEL_FLEET = "agentfleet.dev/fleet"
ANNOTATION_STATE = "agentfleet.dev/state"
ANNOTATION_STEPS = "agentfleet.dev/steps"
ANNOTATION_TASK_STEPS = "agentfleet.dev/task-steps"
ANNOTATION_ACTION_REPEATS = "agentfleet.dev/action-repeats"
ANNOTATION_LAST_STEP_TIME = "agentfleet.dev/last-step-time"
ANNOTATION_TASKS_SUCCEEDED = "agentfleet.dev/tasks-succeeded"
ANNOTATION_TASKS_FAILED = "agentfleet.dev/tasks-failed"
ANNOTATION_TOKENS_IN = "agentfleet.dev/tokens-in"
ANNOTATION_TOKENS_OUT = "agentfleet.dev/tokens-out"
ANNOTATION_TASK_TOKENS = "agentfleet.dev/task-tokens"
ANNOTATION_TASK_STARTED = "agentfleet.dev/task-started"
STATE_IDLE = "idle"
STATE_WORKING = "working"
ENV_FLEET = "AGENTFLEET_FLEET"
ENV_NAMESPACE = "AGENTFLEET_NAMESPACE"
ENV_POD_NAME = "AGENTFLEET_POD_NAME"
ENV_HEARTBEAT_INTERVAL = "AGENTFLEET_HEARTBEAT_INTERVAL"
ENV_MODEL_NAME = "AGENTFLEET_MODEL_NAME"
ENV_MODEL_VERSION = "AGENTFLEET_MODEL_VERSION"
ENV_MODEL_ENDPOINT = "AGENTFLEET_MODEL_ENDPOINT"
ENV_PROMPT_FILE = "AGENTFLEET_PROMPT_FILE"


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Heartbeat:
    """Keeps one worker's heartbeat Lease."""

    def __init__(self, namespace, fleet, pod, interval_seconds, api=None):
        self.namespace, self.fleet, self.pod = namespace, fleet, pod
        self.interval = float(interval_seconds)
        self._api = api or client.CoordinationV1Api()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._state = STATE_IDLE
        self._steps = 0
        self._task_steps = 0
        self._repeats = 0
        self._last_action = None
        self._last_step = None
        self._last_write = None
        self._task_started = None
        self._tasks = None  # [succeeded, failed] once an outcome was reported
        self._tokens = None  # [in, out] once tokens were reported
        self._task_tokens = 0
        self._lease = None
        self.writes = 0

    @classmethod
    def from_env(cls, api=None):
        """A client configured from the environment the operator gives agent workers."""
        names = [ENV_NAMESPACE, ENV_FLEET, ENV_POD_NAME, ENV_HEARTBEAT_INTERVAL]
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise RuntimeError("heartbeat: not set: %s (is the fleet's spec.health.heartbeat set?)" % ", ".join(missing))
        if api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        return cls(os.environ[ENV_NAMESPACE], os.environ[ENV_FLEET], os.environ[ENV_POD_NAME],
                   int(os.environ[ENV_HEARTBEAT_INTERVAL]), api)

    def start(self):
        """Writes the Lease and keeps renewing it every interval from a daemon thread, until stop()."""
        self._write()
        threading.Thread(target=self._renew, name="agentfleet-heartbeat", daemon=True).start()

    def stop(self):
        self._stop.set()

    def step(self, action):
        """Records a step of the current task taking action."""
        digest = hashlib.sha256(action.encode("utf-8")).digest()
        with self._lock:
            starts_task = self._state != STATE_WORKING
            if not starts_task and digest == self._last_action:
                self._repeats += 1
            else:
                self._repeats = 1
            if starts_task:
                self._task_steps = 0
                self._task_started = _now()
            self._state, self._last_action = STATE_WORKING, digest
            self._steps += 1
            self._task_steps += 1
            self._last_step = _now()
            due = starts_task or self._last_write is None or \
                (_now() - self._last_write).total_seconds() >= self.interval
        if due:
            self._write()

    def idle(self):
        """Records that the current task is done, without an outcome."""
        with self._lock:
            if self._state == STATE_IDLE:
                return
            self._end_task()
        self._write()

    def task_done(self, ok):
        """Records that the current task is done, succeeded (ok) or failed; the worker is idle."""
        with self._lock:
            if self._tasks is None:
                self._tasks = [0, 0]
            self._tasks[0 if ok else 1] += 1
            self._end_task()
        self._write()

    def tokens(self, input_tokens, output_tokens):
        """Records model tokens the current task used: input (prompt) and output (completion)."""
        for n in (input_tokens, output_tokens):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError("heartbeat: tokens must be whole numbers, not negative: %r in, %r out" % (input_tokens, output_tokens))
        with self._lock:
            if self._tokens is None:
                self._tokens = [0, 0]
            self._tokens[0] += input_tokens
            self._tokens[1] += output_tokens
            self._task_tokens += input_tokens + output_tokens
            due = self._last_write is None or (_now() - self._last_write).total_seconds() >= self.interval
        if due:
            self._write()

    def _end_task(self):
        self._state, self._task_steps, self._repeats, self._last_action = STATE_IDLE, 0, 0, None
        self._task_tokens, self._task_started = 0, None

    def _renew(self):
        while not self._stop.wait(self.interval):
            try:
                self._write()
            except ApiException:
                pass  # retried at the next renewal

    def _write(self):
        # The write lock is taken before the snapshot, as in the Go client, so that writes go out in
        # the order their snapshots were taken: a renewal's older snapshot never overwrites a newer one.
        with self._write_lock:
            self._write_locked()

    def _write_locked(self):
        with self._lock:
            annotations = {
                ANNOTATION_STATE: self._state,
                ANNOTATION_STEPS: str(self._steps),
                ANNOTATION_TASK_STEPS: str(self._task_steps),
                ANNOTATION_ACTION_REPEATS: str(self._repeats),
            }
            if self._last_step is not None:
                annotations[ANNOTATION_LAST_STEP_TIME] = _rfc3339(self._last_step)
            if self._tasks is not None:
                annotations[ANNOTATION_TASKS_SUCCEEDED] = str(self._tasks[0])
                annotations[ANNOTATION_TASKS_FAILED] = str(self._tasks[1])
            if self._tokens is not None:
                annotations[ANNOTATION_TOKENS_IN] = str(self._tokens[0])
                annotations[ANNOTATION_TOKENS_OUT] = str(self._tokens[1])
                annotations[ANNOTATION_TASK_TOKENS] = str(self._task_tokens)
            if self._task_started is not None:
                annotations[ANNOTATION_TASK_STARTED] = _rfc3339(self._task_started)
            now = _now()
            self._last_write = now
            self.writes += 1
        lease = self._lease
        if lease is None:
            try:
                lease = self._api.read_namespaced_lease(self.pod, self.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise
                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=self.pod, namespace=self.namespace,
                                                 labels={LABEL_FLEET: self.fleet}, annotations=annotations),
                    spec=client.V1LeaseSpec(holder_identity=self.pod, lease_duration_seconds=int(self.interval),
                                            acquire_time=now, renew_time=now))
                self._lease = self._api.create_namespaced_lease(self.namespace, body)
                return
        lease.metadata.labels = {LABEL_FLEET: self.fleet}
        lease.metadata.annotations = annotations
        lease.spec.holder_identity = self.pod
        lease.spec.renew_time = now
        try:
            self._lease = self._api.replace_namespaced_lease(self.pod, self.namespace, lease)
        except ApiException:
            self._lease = None  # a conflict or a deleted Lease: read it again next time
            raise
