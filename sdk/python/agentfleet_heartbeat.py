"""AgentFleet's heartbeat contract for Python agents, in one file, on the official kubernetes client.

    from agentfleet_heartbeat import Heartbeat

    hb = Heartbeat.from_env()   # AGENTFLEET_FLEET, AGENTFLEET_NAMESPACE, AGENTFLEET_POD_NAME, AGENTFLEET_HEARTBEAT_INTERVAL
    hb.start()                  # keeps the Lease renewed from a daemon thread
    if hb.paused(): ...         # before taking a task: the fleet's budget is spent
    b = hb.budget()             # at each task's start: the per-task budget in force
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

Budgets and pauses, as in the Go client: the operator writes directives on the same Lease, and the
client keeps them (it rewrites only the annotations it owns) and reads them at every write, so an
agent learns of a change at its next write or renewal, within an interval. A write that conflicts
(the operator wrote the Lease since it was last read) reads it again and is retried at once.
budget() is the per-task budget of the fleet's spec.budgets: the worker's environment
(AGENTFLEET_MAX_*), as changed since on the Lease; a change rolls no worker, so call budget() at
each task's start and hand it to the agent framework. The operator enforces the budget from outside
as well. paused() is True while the fleet is paused by its budget (spec.budgets.onExceeded: Pause):
the agent finishes or abandons its current task and reports it (task_done(ok=False) for an
abandoned one), keeps renewing (a worker that stops renewing is replaced as stalled), and starts no
new task until paused() is False again; checking it once per interval while paused is enough.
"""

import dataclasses
import datetime
import hashlib
import os
import re
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
ANNOTATION_PAUSED = "agentfleet.dev/paused"
ANNOTATION_MAX_STEPS_PER_TASK = "agentfleet.dev/max-steps-per-task"
ANNOTATION_MAX_TOKENS_PER_TASK = "agentfleet.dev/max-tokens-per-task"
ANNOTATION_MAX_TASK_SECONDS = "agentfleet.dev/max-task-seconds"
ANNOTATION_MAX_TASK_COST = "agentfleet.dev/max-task-cost"
ENV_MAX_STEPS_PER_TASK = "AGENTFLEET_MAX_STEPS_PER_TASK"
ENV_MAX_TOKENS_PER_TASK = "AGENTFLEET_MAX_TOKENS_PER_TASK"
ENV_MAX_TASK_SECONDS = "AGENTFLEET_MAX_TASK_SECONDS"
ENV_MAX_TASK_COST = "AGENTFLEET_MAX_TASK_COST"

# BudgetAnnotations of the contract: each per-task budget's Lease annotation and environment
# variable, with the field of Budget it sets.
BUDGET_ANNOTATIONS = (
    (ANNOTATION_MAX_STEPS_PER_TASK, ENV_MAX_STEPS_PER_TASK, "max_steps"),
    (ANNOTATION_MAX_TOKENS_PER_TASK, ENV_MAX_TOKENS_PER_TASK, "max_tokens"),
    (ANNOTATION_MAX_TASK_SECONDS, ENV_MAX_TASK_SECONDS, "max_seconds"),
    (ANNOTATION_MAX_TASK_COST, ENV_MAX_TASK_COST, "max_cost"),
)

# The annotations the client writes: it removes those it no longer reports (the task's start when
# idle) and keeps every other, the operator's directives among them.
_OWNED = frozenset((
    ANNOTATION_STATE, ANNOTATION_STEPS, ANNOTATION_TASK_STEPS, ANNOTATION_ACTION_REPEATS,
    ANNOTATION_LAST_STEP_TIME, ANNOTATION_TASKS_SUCCEEDED, ANNOTATION_TASKS_FAILED,
    ANNOTATION_TOKENS_IN, ANNOTATION_TOKENS_OUT, ANNOTATION_TASK_TOKENS, ANNOTATION_TASK_STARTED,
))

# The form of a cost, as the AgentFleet API validates it.
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


@dataclasses.dataclass(frozen=True)
class Budget:
    """The per-task budget in force: what one task may take. 0 (and "" for the cost) is no limit.

    max_steps: the steps (step() calls) one task may take; past it the operator replaces the worker
    as looping. max_tokens: the model tokens, input and output together. max_seconds: how long one
    task may run, in whole seconds. max_cost: what the model tokens of one task may cost, a decimal
    such as "0.50" in the currency of the operator's price table, kept a string so that no
    precision is lost (decimal.Decimal(b.max_cost) where a number is needed).
    """
    max_steps: int = 0
    max_tokens: int = 0
    max_seconds: int = 0
    max_cost: str = ""


def _limit(field, value):
    """The limit value gives field ("" is no limit), or ValueError saying why it is none."""
    if field == "max_cost":
        if value and not _DECIMAL.fullmatch(value):
            raise ValueError("not a decimal cost such as 0.50")
        return value
    if value == "":
        return 0
    if not re.fullmatch(r"[0-9]+", value):
        raise ValueError("not a whole number, 0 or more")
    return int(value)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Heartbeat:
    """Keeps one worker's heartbeat Lease."""

    def __init__(self, namespace, fleet, pod, interval_seconds, api=None, budget=None):
        """budget is the one the worker was started with, which stands until the operator changes it
        on the Lease: from_env reads it from the environment; without it there is none."""
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
        self._env_budget = budget or Budget()
        self._operator = {}  # the annotations of the Lease as last read that the client does not own
        self.writes = 0

    @classmethod
    def from_env(cls, api=None):
        """A client configured from the environment the operator gives agent workers."""
        names = [ENV_NAMESPACE, ENV_FLEET, ENV_POD_NAME, ENV_HEARTBEAT_INTERVAL]
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise RuntimeError("heartbeat: not set: %s (is the fleet's spec.health.heartbeat set?)" % ", ".join(missing))
        every = os.environ[ENV_HEARTBEAT_INTERVAL]
        if not re.fullmatch(r"[0-9]+", every) or int(every) < 1:
            raise ValueError("heartbeat: %s=%r is not a number of seconds" % (ENV_HEARTBEAT_INTERVAL, every))
        limits, errors = {}, []
        for _, env, field in BUDGET_ANNOTATIONS:
            if env in os.environ:
                try:
                    limits[field] = _limit(field, os.environ[env])
                except ValueError as e:
                    errors.append("%s=%r: %s" % (env, os.environ[env], e))
        if errors:
            raise ValueError("heartbeat: the budget in the environment: " + "; ".join(errors))
        if api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        return cls(os.environ[ENV_NAMESPACE], os.environ[ENV_FLEET], os.environ[ENV_POD_NAME],
                   int(every), api, Budget(**limits))

    def budget(self):
        """The per-task budget in force, a Budget: for each limit, the operator's annotation on the
        Lease as last read when there is one ("" there is no limit), otherwise the environment's.
        Call it at each task's start: a budget change reaches a running worker this way, without a
        restart. A malformed annotation, which the operator does not write, is ignored: the
        environment's value stands."""
        with self._lock:
            limits = {}
            for annotation, _, field in BUDGET_ANNOTATIONS:
                if annotation in self._operator:
                    try:
                        limits[field] = _limit(field, self._operator[annotation])
                    except ValueError:
                        pass  # the environment's value stands, as documented
            return dataclasses.replace(self._env_budget, **limits)

    def paused(self):
        """Whether the fleet is paused by its budget, as of the Lease last read (at the last write or
        renewal): the agent must start no new task while it is (see the module's documentation)."""
        with self._lock:
            return self._operator.get(ANNOTATION_PAUSED) == "true"

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
                self._read(self._api.create_namespaced_lease(self.namespace, body))
                return
            self._read(lease)
        try:
            try:
                written = self._api.replace_namespaced_lease(self.pod, self.namespace, self._renewed(lease, annotations, now))
            except ApiException as e:
                if e.status != 409:
                    raise
                # Someone wrote the Lease since: the operator, with a directive. Read it and write
                # again now, rather than at the next interval, so that no renewal is lost to it.
                lease = self._api.read_namespaced_lease(self.pod, self.namespace)
                self._read(lease)
                with self._lock:
                    self.writes += 1
                written = self._api.replace_namespaced_lease(self.pod, self.namespace, self._renewed(lease, annotations, now))
        except ApiException:
            self._lease = None  # a deleted Lease, or a conflict again: the next write reads it first
            raise
        self._read(written)

    def _renewed(self, lease, own, now):
        """lease as this write makes it: the client's annotations (own) replace those it owns, and
        every other annotation and label stays, the operator's directives among them."""
        annotations = {k: v for k, v in (lease.metadata.annotations or {}).items() if k not in _OWNED}
        annotations.update(own)
        labels = dict(lease.metadata.labels or {})
        labels[LABEL_FLEET] = self.fleet
        lease.metadata.annotations, lease.metadata.labels = annotations, labels
        lease.spec.holder_identity = self.pod
        lease.spec.renew_time = now
        return lease

    def _read(self, lease):
        """Records lease as the last read (or written): the next write starts from it, and its
        directives are the ones in force. Called with the write lock held."""
        self._lease = lease
        operator = {k: v for k, v in (lease.metadata.annotations or {}).items() if k not in _OWNED}
        with self._lock:
            self._operator = operator
