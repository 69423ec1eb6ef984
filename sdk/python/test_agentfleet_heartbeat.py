"""Unit tests of agentfleet_heartbeat against a recording fake of CoordinationV1Api.

Run: python3 -m unittest discover -s sdk/python (make test runs them, and an end-to-end test on the
local cluster in test/e2e/python_test.go).
"""

import unittest

from kubernetes.client.rest import ApiException

import agentfleet_heartbeat as hbmod


class FakeLeases:
    def __init__(self):
        self.lease = None
        self.writes = []

    def read_namespaced_lease(self, name, namespace):
        if self.lease is None:
            raise ApiException(status=404)
        return self.lease

    def create_namespaced_lease(self, namespace, body):
        self.lease = body
        self.writes.append(dict(body.metadata.annotations))
        return body

    def replace_namespaced_lease(self, name, namespace, body):
        self.lease = body
        self.writes.append(dict(body.metadata.annotations))
        return body


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


if __name__ == "__main__":
    unittest.main()
