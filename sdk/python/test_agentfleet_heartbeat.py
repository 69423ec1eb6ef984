"""Unit tests of agentfleet_heartbeat against a recording fake of CoordinationV1Api.

Run: python3 -m unittest discover -s sdk/python (make test runs them, and an end-to-end test on the
local cluster in test/e2e/python_test.go).
"""

import copy
import os
import unittest
from unittest import mock

from kubernetes.client.rest import ApiException

import agentfleet_heartbeat as hbmod


class FakeLeases:
    """CoordinationV1Api's Lease calls, with the API server's optimistic concurrency: every write
    stamps a new resource_version, and a replace of any other is a conflict (409). It hands out and
    keeps copies, as a server does."""

    def __init__(self):
        self.lease = None  # as stored
        self.writes = []  # the annotations of each write that landed
        self.calls = []
        self.version = 0
        self.always_conflict = False

    def _store(self, body):
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease.metadata.resource_version = str(self.version)
        self.writes.append(dict(self.lease.metadata.annotations))
        return copy.deepcopy(self.lease)

    def read_namespaced_lease(self, name, namespace):
        self.calls.append("read")
        if self.lease is None:
            raise ApiException(status=404)
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace, body):
        self.calls.append("create")
        return self._store(body)

    def replace_namespaced_lease(self, name, namespace, body):
        self.calls.append("replace")
        if self.lease is None:
            raise ApiException(status=404)
        if self.always_conflict or body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def operator(self, annotations):
        """Patches the stored Lease as the operator does: a JSON merge patch of metadata.annotations
        only, in which None removes an annotation."""
        a = dict(self.lease.metadata.annotations or {})
        for key, value in annotations.items():
            if value is None:
                a.pop(key, None)
            else:
                a[key] = value
        self.lease.metadata.annotations = a
        self.version += 1
        self.lease.metadata.resource_version = str(self.version)


class HeartbeatTest(unittest.TestCase):
    def setUp(self):
        self.api = FakeLeases()
        self.hb = hbmod.Heartbeat("agents", "research", "research-agents-worker-abcde", 3600, api=self.api)
        self.hb._write()  # what start() writes first

    def test_lease_carries_the_contract(self):
        lease = self.api.lease
        self.assertEqual(lease.metadata.name, "research-agents-worker-abcde")
        self.assertEqual(lease.metadata.labels, {hbmod.LABEL_FLEET: "research"})
        self.assertEqual(lease.spec.holder_identity, "research-agents-worker-abcde")
        self.assertEqual(lease.metadata.annotations[hbmod.ANNOTATION_STATE], hbmod.STATE_IDLE)

    def test_repeats_count_the_same_action_in_a_row(self):
        self.hb.step("search: a")   # starts a task: written at once
        self.hb.step("search: a")
        self.hb.step("search: a")
        self.hb._write()
        a = self.api.lease.metadata.annotations
        self.assertEqual((a[hbmod.ANNOTATION_STATE], a[hbmod.ANNOTATION_ACTION_REPEATS], a[hbmod.ANNOTATION_TASK_STEPS], a[hbmod.ANNOTATION_STEPS]),
                         (hbmod.STATE_WORKING, "3", "3", "3"))
        self.hb.step("search: b")
        self.hb._write()
        self.assertEqual(self.api.lease.metadata.annotations[hbmod.ANNOTATION_ACTION_REPEATS], "1")

    def test_idle_ends_the_task(self):
        self.hb.step("x")
        self.hb.step("x")
        self.hb.idle()
        a = self.api.lease.metadata.annotations
        self.assertEqual((a[hbmod.ANNOTATION_STATE], a[hbmod.ANNOTATION_ACTION_REPEATS], a[hbmod.ANNOTATION_TASK_STEPS], a[hbmod.ANNOTATION_STEPS]),
                         (hbmod.STATE_IDLE, "0", "0", "2"))
        self.assertIn(hbmod.ANNOTATION_LAST_STEP_TIME, a)
        writes = len(self.api.writes)
        self.hb.idle()  # nothing new: no write
        self.assertEqual(len(self.api.writes), writes)

    def test_steps_within_an_interval_are_coalesced(self):
        self.hb.step("one")  # starts a task: written
        before = len(self.api.writes)
        for i in range(100):
            self.hb.step("step %d" % i)
        self.assertEqual(len(self.api.writes), before, "steps within the interval must wait for the renewal")


    def test_outcomes_and_tokens_are_annotated_once_reported(self):
        a = self.api.lease.metadata.annotations
        for key in (hbmod.ANNOTATION_TASKS_SUCCEEDED, hbmod.ANNOTATION_TOKENS_IN, hbmod.ANNOTATION_TASK_STARTED):
            self.assertNotIn(key, a, "nothing reported yet: absent, not 0")
        self.hb.step("plan")  # starts a task: written, with its start
        self.assertIn(hbmod.ANNOTATION_TASK_STARTED, self.api.lease.metadata.annotations)
        self.hb.tokens(1000, 200)
        self.hb.tokens(500, 100)
        self.hb.task_done(ok=True)  # written at once
        a = self.api.lease.metadata.annotations
        self.assertEqual((a[hbmod.ANNOTATION_TASKS_SUCCEEDED], a[hbmod.ANNOTATION_TASKS_FAILED], a[hbmod.ANNOTATION_TOKENS_IN],
                          a[hbmod.ANNOTATION_TOKENS_OUT], a[hbmod.ANNOTATION_TASK_TOKENS], a[hbmod.ANNOTATION_STATE]),
                         ("1", "0", "1500", "300", "0", hbmod.STATE_IDLE))
        self.assertNotIn(hbmod.ANNOTATION_TASK_STARTED, a, "idle: no task started")
        self.hb.step("plan")
        self.hb.tokens(10, 5)
        self.hb.task_done(ok=False)
        a = self.api.lease.metadata.annotations
        self.assertEqual((a[hbmod.ANNOTATION_TASKS_SUCCEEDED], a[hbmod.ANNOTATION_TASKS_FAILED], a[hbmod.ANNOTATION_TOKENS_IN]), ("1", "1", "1510"))

    def test_tokens_within_an_interval_are_coalesced(self):
        self.hb.step("one")
        before = len(self.api.writes)
        for _ in range(100):
            self.hb.tokens(10, 1)
        self.assertEqual(len(self.api.writes), before, "tokens within the interval must wait for the renewal")
        self.hb._write()
        self.assertEqual(self.api.lease.metadata.annotations[hbmod.ANNOTATION_TASK_TOKENS], "1100")

    def test_tokens_that_are_not_whole_numbers_are_refused(self):
        for bad in ((-1, 0), (1.5, 0), (True, 0), ("10", 0)):
            with self.assertRaises(ValueError):
                self.hb.tokens(*bad)

    def test_operator_annotations_survive_the_writes(self):
        foreign = {hbmod.ANNOTATION_PAUSED: "true", hbmod.ANNOTATION_MAX_TOKENS_PER_TASK: "200000",
                   hbmod.ANNOTATION_MAX_TASK_COST: "", "example.com/owner": "team-a"}
        self.api.operator(foreign)
        self.hb.step("plan")  # starts a task: written at once (after a conflict)
        a = self.api.lease.metadata.annotations
        self.assertEqual({k: a.get(k) for k in foreign}, foreign)
        self.assertEqual((a[hbmod.ANNOTATION_STATE], a[hbmod.ANNOTATION_STEPS]), (hbmod.STATE_WORKING, "1"))
        self.assertIn(hbmod.ANNOTATION_TASK_STARTED, a)
        self.hb.task_done(ok=True)
        a = self.api.lease.metadata.annotations
        self.assertEqual({k: a.get(k) for k in foreign}, foreign)
        self.assertEqual(a[hbmod.ANNOTATION_STATE], hbmod.STATE_IDLE)
        self.assertNotIn(hbmod.ANNOTATION_TASK_STARTED, a, "an own annotation no longer reported is removed")
        self.assertEqual(self.api.lease.metadata.labels, {hbmod.LABEL_FLEET: "research"})

    def test_a_conflict_is_retried_at_once(self):
        self.api.operator({hbmod.ANNOTATION_PAUSED: "true"})
        self.api.calls.clear()
        writes = self.hb.writes
        self.hb.step("plan")  # starts a task: written at once
        self.assertEqual(self.api.calls, ["replace", "read", "replace"], "a conflict, a read, the write again")
        self.assertEqual(self.hb.writes - writes, 2, "the retry is a write")
        a = self.api.lease.metadata.annotations
        self.assertEqual((a[hbmod.ANNOTATION_STATE], a[hbmod.ANNOTATION_PAUSED]), (hbmod.STATE_WORKING, "true"))
        self.assertTrue(self.hb.paused())

    def test_a_conflict_is_retried_once(self):
        self.api.always_conflict = True
        self.api.calls.clear()
        with self.assertRaises(ApiException) as raised:
            self.hb.step("plan")
        self.assertEqual(raised.exception.status, 409)
        self.assertEqual(self.api.calls, ["replace", "read", "replace"])
        self.api.always_conflict = False
        self.api.calls.clear()
        self.hb.task_done(ok=True)  # the next write reads the Lease afresh, and lands
        self.assertEqual(self.api.calls, ["read", "replace"])
        a = self.api.lease.metadata.annotations
        self.assertEqual((a[hbmod.ANNOTATION_STATE], a[hbmod.ANNOTATION_STEPS], a[hbmod.ANNOTATION_TASKS_SUCCEEDED]),
                         (hbmod.STATE_IDLE, "1", "1"))

    def test_paused_follows_the_lease(self):
        steps = [
            ("before any directive", None, False, False),
            ("paused, before the next write", {hbmod.ANNOTATION_PAUSED: "true"}, False, False),
            ("paused, after the next renewal", None, True, True),
            ("unpaused (the annotation removed)", {hbmod.ANNOTATION_PAUSED: None}, True, False),
            ("paused again", {hbmod.ANNOTATION_PAUSED: "true"}, True, True),
            ("anything but true is not paused", {hbmod.ANNOTATION_PAUSED: "false"}, True, False),
        ]
        for name, patch, renew, want in steps:
            if patch is not None:
                self.api.operator(patch)
            if renew:
                self.hb._write()  # what the renewal thread does every interval
            self.assertEqual(self.hb.paused(), want, name)


BASE_ENV = {hbmod.ENV_NAMESPACE: "agents", hbmod.ENV_FLEET: "research",
            hbmod.ENV_POD_NAME: "research-agents-worker-abcde", hbmod.ENV_HEARTBEAT_INTERVAL: "3600"}
BUDGET_ENV = {hbmod.ENV_MAX_STEPS_PER_TASK: "500", hbmod.ENV_MAX_TOKENS_PER_TASK: "100000",
              hbmod.ENV_MAX_TASK_SECONDS: "600", hbmod.ENV_MAX_TASK_COST: "0.50"}
FROM_ENV = hbmod.Budget(max_steps=500, max_tokens=100000, max_seconds=600, max_cost="0.50")


class BudgetTest(unittest.TestCase):
    def client(self, env):
        api = FakeLeases()
        with mock.patch.dict(os.environ, dict(BASE_ENV, **env), clear=True):
            return hbmod.Heartbeat.from_env(api=api), api

    def test_budget(self):
        cases = {
            "none: no limits": ({}, None, hbmod.Budget()),
            "empty variables: no limits": ({hbmod.ENV_MAX_TOKENS_PER_TASK: "", hbmod.ENV_MAX_TASK_COST: ""}, None, hbmod.Budget()),
            "the environment's": (BUDGET_ENV, None, FROM_ENV),
            "only the steps (always given)": ({hbmod.ENV_MAX_STEPS_PER_TASK: "500"}, None, hbmod.Budget(max_steps=500)),
            "the environment's, other annotations aside": (BUDGET_ENV, {hbmod.ANNOTATION_PAUSED: "true"}, FROM_ENV),
            "annotations override the environment": (
                BUDGET_ENV, {hbmod.ANNOTATION_MAX_TOKENS_PER_TASK: "200000", hbmod.ANNOTATION_MAX_TASK_SECONDS: "1200"},
                hbmod.Budget(max_steps=500, max_tokens=200000, max_seconds=1200, max_cost="0.50")),
            "an empty annotation is no limit": (
                BUDGET_ENV, {hbmod.ANNOTATION_MAX_STEPS_PER_TASK: "", hbmod.ANNOTATION_MAX_TASK_COST: ""},
                hbmod.Budget(max_tokens=100000, max_seconds=600)),
            "an annotation sets a limit the environment has none of": (
                {}, {hbmod.ANNOTATION_MAX_TASK_COST: "1.25", hbmod.ANNOTATION_MAX_STEPS_PER_TASK: "40"},
                hbmod.Budget(max_steps=40, max_cost="1.25")),
            "a malformed annotation is ignored: the environment's value stands": (
                BUDGET_ENV, {hbmod.ANNOTATION_MAX_TOKENS_PER_TASK: "lots", hbmod.ANNOTATION_MAX_TASK_COST: "-1"}, FROM_ENV),
        }
        for name, (env, annotations, want) in cases.items():
            with self.subTest(name):
                hb, api = self.client(env)
                env_only = hb.budget()
                hb._write()  # what start() writes first
                if annotations is not None:
                    api.operator(annotations)
                    hb._write()  # the next renewal
                self.assertEqual(hb.budget(), want)
                if annotations is None:
                    continue
                api.operator({k: None for k in annotations})
                hb._write()
                self.assertEqual(hb.budget(), env_only, "the annotations removed, the environment's budget stands")

    def test_a_malformed_budget_in_the_environment_is_an_error_naming_it(self):
        cases = {
            "steps not a number": (hbmod.ENV_MAX_STEPS_PER_TASK, "lots", "not a whole number"),
            "negative tokens": (hbmod.ENV_MAX_TOKENS_PER_TASK, "-5", "not a whole number"),
            "fractional seconds": (hbmod.ENV_MAX_TASK_SECONDS, "1.5", "not a whole number"),
            "cost not a decimal": (hbmod.ENV_MAX_TASK_COST, "$1", "not a decimal cost"),
            "cost in two parts": (hbmod.ENV_MAX_TASK_COST, "0.5.0", "not a decimal cost"),
        }
        for name, (env, value, why) in cases.items():
            with self.subTest(name):
                with self.assertRaises(ValueError) as raised:
                    self.client({env: value})
                self.assertIn("%s=%r: %s" % (env, value, why), str(raised.exception))


if __name__ == "__main__":
    unittest.main()
