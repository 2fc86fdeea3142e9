"""
Acceptance of "exactly once": three gateway processes share one Redis and
one mock upstream. Concurrent duplicates, a flood of distinct tokens, an
upstream timeout, a gateway killed mid-call, a Redis wiped or stopped: in
every case the vendor sees one order per (tenant, client_token).

Measured figures (counts, latencies) go to stdout for the run log.

Run alone: ACRGW_BUILD_DIR=build python3 tests/integration/test_idempotency.py
"""

import concurrent.futures
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (API_KEY_A, API_KEY_B, GatewayCase,  # noqa: E402
                     deep_merge, log, new_token, valid_order, wait_until)

GATEWAYS = 3
LEASE_MS = 3000
UPSTREAM_TIMEOUT_MS = 1500
# Bounds on every loop below, so a broken gateway fails the test rather
# than hanging the run.
CONCURRENT = 200
DISTINCT = 1000
POOL_WORKERS = 32

# The Redis budget under test. The issue asks for "tens of milliseconds"
# and the product default is 50; the harness gives every suite 200 so slow
# sanitizer builds never trip it, so this suite sets a real figure and ties
# the Redis-down asserts to it. Not 50: with 50, the 1,000-token flood and
# the 200 Prefer: wait duplicates got spurious 503s on a 2-core box under
# ASan with other work running (2 of 7 runs; up to 66 503s in one, as a
# timed-out command drops the worker's connection and fails every command
# queued behind it; one such 503 logged latency_ms 13 against the 50 ms
# budget). 75 gave no timeout at all in 6 runs in the same conditions.
REDIS_BUDGET_MS = 75
# Room above the budget for what is not Redis: a connection, the request
# parsed and answered, the client's thread scheduled, on two cores shared
# with four ASan gateways (the hung case measured budget + 2 to 9 ms).
REDIS_SLACK_MS = 150
# A timer armed from libevent's cached clock may fire a few ms early.
TIMER_EARLY_MS = 5

OVERRIDES = {"redis": {"command_timeout_ms": REDIS_BUDGET_MS}}

# One more gateway, for the Prefer: wait cap: a duplicate may wait at most
# WAIT_MAX_S. Not for the whole suite, as the Prefer: wait tests above rely
# on the 20 s cap. Its longer upstream timeout (and the lease, which must
# outlive it) lets the first call stay upstream well past the cap, so the
# waiter's 409 cannot be confused with the first call's end.
WAIT_MAX_S = 1
CAPPED_UPSTREAM_TIMEOUT_MS = 6000
CAPPED_OVERRIDES = {
    "idempotency": {"wait_max_s": WAIT_MAX_S, "lease_ms": 10000},
    "upstream": {"timeout_ms": CAPPED_UPSTREAM_TIMEOUT_MS},
}


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def latency_summary(latencies_s):
    ms = [v * 1000.0 for v in latencies_s]
    return ("n=%d p50=%.0fms p90=%.0fms p99=%.0fms max=%.0fms"
            % (len(ms), percentile(ms, 50), percentile(ms, 90),
               percentile(ms, 99), max(ms) if ms else 0.0))


class IdempotencySuite(GatewayCase):
    GATEWAYS = GATEWAYS
    OVERRIDES = OVERRIDES

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Started with the others so setUp keeps it ready and the
        # teardown scans its log like theirs.
        try:
            cls.capped = cls.env.start_gateway(
                deep_merge(OVERRIDES, CAPPED_OVERRIDES)).index
        except BaseException:
            cls.env.close()
            raise

    # Helpers

    def timed_post(self, body, gw, key=API_KEY_A, headers=None,
                   timeout=30.0):
        """(response or the exception raised, seconds taken)."""
        start = time.monotonic()
        try:
            resp = self.post_order(body, key=key, headers=headers, gw=gw,
                                   timeout=timeout)
        except Exception as exc:  # a failed exchange is a result here
            resp = exc
        return resp, time.monotonic() - start

    def fire_together(self, count, make_call):
        """
        Runs make_call(i) on count threads released at once by a barrier;
        returns their results in order.
        """
        barrier = threading.Barrier(count)
        results = [None] * count

        def run(i):
            try:
                barrier.wait(10.0)
            except threading.BrokenBarrierError:
                pass
            results[i] = make_call(i)

        threads = [threading.Thread(target=run, args=(i,), daemon=True)
                   for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60.0)
        self.assertFalse(any(t.is_alive() for t in threads),
                         "some requests never finished")
        return results

    def record_path(self, token):
        return "/v1/instances/requests/" + urllib.parse.quote(token, safe="")

    def upstream_token(self):
        return self.mock.stats()["last_params"].get("ClientToken")

    # 1. Many concurrent duplicates

    def test_200_concurrent_duplicates_make_exactly_one_order(self):
        body = valid_order()
        # Holding the first call upstream for a while makes the others
        # arrive while it is in flight, on every node.
        self.mock.fail(count=1, delay_ms=800, commit=True)
        results = self.fire_together(
            CONCURRENT, lambda i: self.timed_post(body, gw=i % GATEWAYS))

        statuses = {}
        originals = 0
        instance_ids = set()
        for resp, _ in results:
            self.assertNotIsInstance(resp, Exception, repr(resp))
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 201:
                instance_ids.add(resp.body["instance_id"])
                if resp.headers.get("idempotent-replayed") != "true":
                    originals += 1
            elif resp.status == 409:
                self.assertProblem(resp, 409, "request_in_progress")
                self.assertIn("retry-after", resp.headers)
        stats = self.mock.stats()
        log("concurrent x%d: statuses %s, originals %d, orders %d, calls %d,"
            " %s" % (CONCURRENT, statuses, originals, stats["orders"],
                     stats["calls"], latency_summary([t for _, t in results])))
        self.assertEqual(set(statuses) - {201, 409}, set(), statuses)
        self.assertEqual(stats["orders"], 1)
        # The mock makes one order per ClientToken whatever it is sent, so
        # only the call count shows that no duplicate reached the vendor.
        self.assertEqual(stats["calls"], 1)
        self.assertEqual(list(stats["tokens"].values()), [1])
        self.assertEqual(originals, 1)
        self.assertEqual(instance_ids, {self.mock.committed_instance(
            stats["last_params"].get("ClientToken"))})

    def test_200_concurrent_duplicates_with_prefer_wait_all_get_201(self):
        body = valid_order()
        self.mock.fail(count=1, delay_ms=800, commit=True)
        results = self.fire_together(
            CONCURRENT, lambda i: self.timed_post(
                body, gw=i % GATEWAYS, headers={"Prefer": "wait=10"}))

        statuses = {}
        instance_ids = set()
        replays = 0
        for resp, _ in results:
            self.assertNotIsInstance(resp, Exception, repr(resp))
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 201:
                instance_ids.add(resp.body["instance_id"])
                if resp.headers.get("idempotent-replayed") == "true":
                    replays += 1
        stats = self.mock.stats()
        log("concurrent x%d with Prefer: wait=10: statuses %s, replays %d, "
            "orders %d, calls %d, %s"
            % (CONCURRENT, statuses, replays, stats["orders"], stats["calls"],
               latency_summary([t for _, t in results])))
        self.assertEqual(statuses, {201: CONCURRENT})
        self.assertEqual(len(instance_ids), 1)
        self.assertEqual(replays, CONCURRENT - 1)
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["calls"], 1)
        self.assertEqual(list(stats["tokens"].values()), [1])

    # 2. A flood of distinct tokens, each sent twice

    def test_1000_distinct_tokens_sent_twice_make_1000_orders(self):
        tokens = [new_token("flood") for _ in range(DISTINCT)]
        bodies = {t: valid_order(t) for t in tokens}
        jobs = tokens * 2
        rng = random.Random(1234)
        rng.shuffle(jobs)

        def call(job):
            i, token = job
            return token, self.timed_post(bodies[token], gw=i % GATEWAYS)

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(POOL_WORKERS) as pool:
            results = list(pool.map(call, enumerate(jobs)))
        elapsed = time.monotonic() - start

        statuses = {}
        created = {}
        # Per token: its answers as "original" (a 201 that is not a
        # replay), "replay" (201 with Idempotent-Replayed) or "409".
        answers = {t: [] for t in tokens}
        failures = []
        for token, (resp, _) in results:
            if isinstance(resp, Exception):
                failures.append(repr(resp))
                continue
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 201:
                created.setdefault(token, set()).add(
                    resp.body["instance_id"])
                answers[token].append(
                    "replay" if resp.headers.get("idempotent-replayed") ==
                    "true" else "original")
            elif resp.status == 409:
                self.assertProblem(resp, 409, "request_in_progress")
                answers[token].append("409")
        stats = self.mock.stats()
        kinds = {}
        for got in answers.values():
            key = "+".join(sorted(got))
            kinds[key] = kinds.get(key, 0) + 1
        log("distinct x%d twice: %.1f s (%.0f req/s), statuses %s, "
            "answer pairs %s, orders %d, calls %d, %s"
            % (DISTINCT, elapsed, len(jobs) / elapsed, statuses, kinds,
               stats["orders"], stats["calls"],
               latency_summary([t for _, (_, t) in results])))
        self.assertEqual(failures, [])
        self.assertEqual(set(statuses) - {201, 409}, set(), statuses)
        self.assertEqual(stats["orders"], DISTINCT)
        self.assertEqual(len(created), DISTINCT)
        self.assertTrue(all(len(ids) == 1 for ids in created.values()))
        # The mock makes one order per ClientToken however often it is
        # called, so orders alone cannot see a double send: every token
        # must have reached the vendor exactly once.
        self.assertEqual(stats["calls"], DISTINCT)
        self.assertEqual(len(stats["tokens"]), DISTINCT)
        self.assertEqual({t: n for t, n in stats["tokens"].items() if n != 1},
                         {})
        # And each client saw one original answer; its duplicate was a
        # replay of it or, while it was still upstream, a 409.
        odd = {t: got for t, got in answers.items()
               if sorted(got) not in (["original", "replay"],
                                      ["409", "original"])}
        self.assertEqual(odd, {})

    # 3. Upstream timeout, then a retry after the lease

    def test_upstream_timeout_is_504_and_retry_after_lease_gets_the_order(
            self):
        body = valid_order()
        self.mock.fail(count=1, delay_ms=UPSTREAM_TIMEOUT_MS + 1000,
                       commit=True)
        resp, took = self.timed_post(body, gw=0)
        self.assertNotIsInstance(resp, Exception, repr(resp))
        self.assertProblem(resp, 504, "upstream_timeout")
        log("upstream timeout answered in %.0f ms" % (took * 1000))
        self.assertLess(took, UPSTREAM_TIMEOUT_MS / 1000.0 + 1.0)

        # The mock finishes the slow call and commits the order.
        wait_until(lambda: self.mock.orders() == 1, 5.0, "the slow commit")
        committed_token = self.upstream_token()

        start = time.monotonic()
        final, conflicts = self.post_until_settled(body, gw=1)
        log("retry after timeout: %d x 409, settled after %.0f ms"
            % (conflicts, (time.monotonic() - start) * 1000))
        self.assertCreated(final, body["client_token"])
        self.assertEqual(final.body["instance_id"],
                         self.mock.committed_instance(committed_token))
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["tokens"].get(committed_token), stats["calls"])
        self.assertEqual(stats["last_params"].get("ClientToken"),
                         committed_token)

        again = self.post_order(body, gw=2)
        self.assertEqual(again.status, 201)
        self.assertReplayed(again)
        self.assertEqual(again.body["instance_id"],
                         final.body["instance_id"])

    # 4. A gateway killed while its call is upstream

    def test_gateway_killed_mid_call_retry_elsewhere_gets_same_order(self):
        body = valid_order()
        self.mock.fail(count=1, delay_ms=2500, commit=True)
        victim = self.gw(0)
        calls_before = self.mock.calls()

        first = {}
        client = threading.Thread(
            target=lambda: first.update(r=self.timed_post(body, gw=0)),
            daemon=True)
        client.start()
        self.mock.wait_calls(calls_before + 1, timeout=5.0)
        time.sleep(0.3)
        victim.kill(signal.SIGKILL)
        client.join(10.0)
        self.assertFalse(client.is_alive())
        log("killed gateway 0 mid-call; its client got %r"
            % (first.get("r", (None,))[0],))

        wait_until(lambda: self.mock.orders() == 1, 5.0, "the slow commit")
        first_token = self.upstream_token()
        start = time.monotonic()
        final, conflicts = self.post_until_settled(body, gw=1)
        log("retry through gateway 1: %d x 409, settled after %.0f ms"
            % (conflicts, (time.monotonic() - start) * 1000))
        self.assertCreated(final, body["client_token"])
        self.assertEqual(final.body["instance_id"],
                         self.mock.committed_instance(first_token))
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["last_params"].get("ClientToken"),
                         first_token)

        victim.start()
        self.wait_ready(victim)
        again = self.post_order(body, gw=0)
        self.assertEqual(again.status, 201)
        self.assertReplayed(again)
        self.assertEqual(again.body["instance_id"],
                         final.body["instance_id"])

    # 5. Redis wiped between success and retry

    def test_flushall_then_retry_reaches_vendor_with_same_token(self):
        body = valid_order()
        first = self.post_order(body, gw=0)
        self.assertCreated(first)
        token = self.upstream_token()
        calls = self.mock.calls()

        self.redis.flushall()
        again = self.post_order(body, gw=1)
        self.assertCreated(again, body["client_token"])
        stats = self.mock.stats()
        self.assertEqual(stats["calls"], calls + 1)
        self.assertEqual(stats["last_params"].get("ClientToken"), token)
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(again.body["instance_id"], first.body["instance_id"])
        self.assertEqual(again.body["order_id"], first.body["order_id"])
        self.assertEqual(first.body["instance_id"],
                         self.mock.committed_instance(token))

    # 6. Same request, written differently

    def test_reordered_keys_and_whitespace_are_a_replay(self):
        body = valid_order(image_scanner="ACR", vpc_num=2)
        first = self.post_order(body, gw=0)
        self.assertCreated(first)
        text = json.dumps(dict(reversed(list(body.items()))), indent="\t",
                          separators=(" ,  ", " :\n "))
        again = self.post_order("\n  " + text + " \r\n", gw=1)
        self.assertEqual(again.status, 201, again.body)
        self.assertReplayed(again)
        self.assertEqual(again.body, first.body)
        self.assertEqual(self.mock.calls(), 1)

    # 7. Redis unreachable

    # Two rounds over the three gateways: the first finds each worker's
    # Redis connection as it was, the second after the gateway noticed the
    # trouble (a refused or dropped connection, then a reconnect).
    REDIS_DOWN_ROUNDS = 2

    def redis_down_posts(self):
        took = []
        for _ in range(self.REDIS_DOWN_ROUNDS):
            for gw in range(GATEWAYS):
                resp, t = self.timed_post(valid_order(), gw=gw, timeout=10.0)
                self.assertNotIsInstance(resp, Exception, repr(resp))
                self.assertProblem(resp, 503, "unavailable")
                took.append(t)
        return took

    def test_redis_stopped_is_503_within_budget_and_no_order(self):
        # Fail closed: a refused connection is known at once, so every
        # answer comes inside the budget (plus the slack for the rest of
        # the request), and nothing reaches the vendor.
        self.redis.stop()
        try:
            took = self.redis_down_posts()
            log("redis stopped (budget %d ms): 503 in %s"
                % (REDIS_BUDGET_MS, latency_summary(took)))
            self.assertLess(max(took) * 1000, REDIS_BUDGET_MS + REDIS_SLACK_MS)
            self.assertEqual(self.mock.calls(), 0)
        finally:
            self.redis.start()

    def test_redis_hung_is_503_after_the_budget_and_no_order(self):
        # A stopped process keeps its socket open and even accepts new
        # connections (the kernel completes them), so the gateway can only
        # give up on its own command budget: the 503 comes no sooner than
        # the budget, proving it waited for Redis, and not much later,
        # proving the budget is what ended the wait.
        seen = [len(self.gw(i).log_lines()) for i in range(GATEWAYS)]
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            took = self.redis_down_posts()
            log("redis hung (budget %d ms): 503 in %s"
                % (REDIS_BUDGET_MS, latency_summary(took)))
            self.assertGreaterEqual(min(took) * 1000,
                                    REDIS_BUDGET_MS - TIMER_EARLY_MS)
            self.assertLess(max(took) * 1000, REDIS_BUDGET_MS + REDIS_SLACK_MS)
            self.assertEqual(self.mock.calls(), 0)
            # The timings alone would pass a gateway still on the
            # harness's 200 ms; each gateway's log names the budget it
            # gave up on, and that must be this suite's.
            for i in range(GATEWAYS):
                budgets = [o.get("budget_ms")
                           for o in self.gw(i).log_lines()[seen[i]:]
                           if o.get("event") == "redis_command_timeout"]
                self.assertTrue(budgets, "gateway %d logged no "
                                "redis_command_timeout" % i)
                self.assertEqual(set(budgets), {REDIS_BUDGET_MS}, i)
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)

    # In-flight behaviour across nodes

    def test_in_flight_token_is_409_elsewhere_and_wait_gets_the_result(self):
        body = valid_order()
        self.mock.fail(count=1, delay_ms=1200, commit=True)
        first = {}
        client = threading.Thread(
            target=lambda: first.update(r=self.timed_post(body, gw=0)),
            daemon=True)
        client.start()
        self.mock.wait_calls(1, timeout=5.0)

        busy = self.post_order(body, gw=1)
        self.assertProblem(busy, 409, "request_in_progress")
        self.assertTrue(busy.headers.get("retry-after", "").isdigit(),
                        busy.headers)

        record = self.request("GET", self.record_path(body["client_token"]),
                              headers=harness.bearer(API_KEY_A), gw=2)
        self.assertEqual(record.status, 200, record.body)
        self.assertEqual(record.body["state"], "in_flight")

        held, took = self.timed_post(body, gw=2,
                                     headers={"Prefer": "wait=5"})
        client.join(10.0)
        original = first["r"][0]
        self.assertCreated(original)
        self.assertEqual(held.status, 201, held.body)
        self.assertReplayed(held)
        self.assertEqual(held.body, original.body)
        log("Prefer: wait=5 held for %.0f ms" % (took * 1000))
        self.assertEqual(self.mock.orders(), 1)

    def test_in_flight_token_with_different_body_is_422(self):
        body = valid_order()
        self.mock.fail(count=1, delay_ms=1200, commit=True)
        first = {}
        client = threading.Thread(
            target=lambda: first.update(r=self.timed_post(body, gw=0)),
            daemon=True)
        client.start()
        self.mock.wait_calls(1, timeout=5.0)
        other = dict(body, period=24)
        resp = self.post_order(other, gw=1)
        self.assertProblem(resp, 422, "idempotency_mismatch")
        resp = self.post_order(other, gw=2, headers={"Prefer": "wait=5"})
        self.assertProblem(resp, 422, "idempotency_mismatch")
        client.join(10.0)
        self.assertCreated(first["r"][0])
        self.assertEqual(self.mock.calls(), 1)

    def test_prefer_wait_is_capped_by_wait_max_s_and_then_409(self):
        # A client may ask to wait 10 s; the gateway holds it at most
        # idempotency.wait_max_s (1 s on this gateway), then answers 409
        # with Retry-After while the first call is still upstream.
        body = valid_order()
        delay_ms = 3000
        self.mock.fail(count=1, delay_ms=delay_ms, commit=True)
        first = {}
        client = threading.Thread(
            target=lambda: first.update(r=self.timed_post(body,
                                                          gw=self.capped)),
            daemon=True)
        client.start()
        self.mock.wait_calls(1, timeout=5.0)

        held, took = self.timed_post(body, gw=self.capped,
                                     headers={"Prefer": "wait=10"})
        first_done_at_409 = "r" in first
        log("Prefer: wait=10 capped by wait_max_s=%d: %r after %.0f ms"
            % (WAIT_MAX_S, getattr(held, "status", held), took * 1000))
        self.assertNotIsInstance(held, Exception, repr(held))
        self.assertProblem(held, 409, "request_in_progress")
        self.assertTrue(held.headers.get("retry-after", "").isdigit(),
                        held.headers)
        self.assertGreaterEqual(int(held.headers["retry-after"]), 1)
        # It did wait, up to the cap, and no longer than the cap needs.
        self.assertGreaterEqual(took, WAIT_MAX_S - 0.05)
        self.assertLess(took, WAIT_MAX_S + 1.0)
        self.assertFalse(first_done_at_409,
                         "the first call ended before the waiter's 409")

        client.join(delay_ms / 1000.0 + 10.0)
        self.assertFalse(client.is_alive())
        original = first["r"][0]
        self.assertNotIsInstance(original, Exception, repr(original))
        self.assertCreated(original, body["client_token"])
        self.assertNotReplayed(original)
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["calls"], 1)

    # The vendor's idempotency answers

    def test_vendor_idempotent_processing_is_resent_with_same_token(self):
        # IdempotentProcessing: the vendor is still working on this
        # ClientToken. The gateway waits and sends again with the same
        # upstream ClientToken, under a new nonce and so a new signature
        # (the vendor refuses a nonce it has seen), and the second answer
        # is the order. The planned failure creates nothing.
        self.mock.fail(count=1, status=400, code="IdempotentProcessing")
        body = valid_order()
        resp, took = self.timed_post(body, gw=0)
        self.assertNotIsInstance(resp, Exception, repr(resp))
        self.assertCreated(resp, body["client_token"])
        self.assertNotReplayed(resp)

        stats = self.mock.stats()
        recent = stats["recent"]
        log("IdempotentProcessing: 201 after %.0f ms, %d calls"
            % (took * 1000, stats["calls"]))
        self.assertEqual(stats["calls"], 2)
        self.assertEqual(len(recent), 2)
        upstream_token = recent[0]["client_token"]
        self.assertTrue(upstream_token)
        self.assertEqual(recent[1]["client_token"], upstream_token)
        self.assertNotEqual(recent[0]["nonce"], recent[1]["nonce"])
        self.assertNotEqual(recent[0]["signature"], recent[1]["signature"])
        self.assertEqual(stats["tokens"], {upstream_token: 2})
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(resp.body["instance_id"],
                         self.mock.committed_instance(upstream_token))
        # "Wait" and resend: not at once, which would only hammer a vendor
        # that just said it is busy (the gateway's first pause is 250 ms).
        self.assertGreaterEqual(took, 0.2)

        again = self.post_order(body, gw=1)
        self.assertEqual(again.status, 201, again.body)
        self.assertReplayed(again)
        self.assertEqual(again.body, resp.body)
        self.assertEqual(self.mock.calls(), 2)

    def test_vendor_idempotent_failed_is_final_stored_and_replayed(self):
        # IdempotentFailed: the vendor's earlier processing of this
        # ClientToken failed for good. Resending cannot change that, so
        # it is a final 422, stored and replayed, with no second call.
        self.mock.fail(count=1, status=400, code="IdempotentFailed")
        body = valid_order()
        rejected = self.post_order(body, gw=0)
        self.assertProblem(rejected, 422, "upstream_rejected")
        self.assertEqual(rejected.body.get("vendor_code"), "IdempotentFailed")
        self.assertNotReplayed(rejected)
        self.assertEqual(self.mock.calls(), 1)

        record = self.request("GET", self.record_path(body["client_token"]),
                              headers=harness.bearer(API_KEY_A), gw=1)
        self.assertEqual(record.status, 200, record.body)
        self.assertEqual(record.body["state"], "failed_final")
        self.assertEqual(record.body["result"]["status"], 422)

        again = self.post_order(body, gw=2)
        self.assertEqual(again.status, 422, again.body)
        self.assertReplayed(again)
        self.assertEqual(again.body, rejected.body)
        stats = self.mock.stats()
        self.assertEqual(stats["calls"], 1)
        self.assertEqual(stats["orders"], 0)

    # The request record

    def test_request_record_own_unknown_and_other_tenants(self):
        body = valid_order()
        created = self.post_order(body, gw=0)
        self.assertCreated(created)
        path = self.record_path(body["client_token"])

        own = self.request("GET", path, headers=harness.bearer(API_KEY_A),
                           gw=1)
        self.assertEqual(own.status, 200, own.body)
        self.assertEqual(own.body["client_token"], body["client_token"])
        self.assertEqual(own.body["state"], "completed")
        self.assertEqual(own.body["result"]["status"], 201)
        self.assertEqual(own.body["result"]["body"], created.body)
        self.assertIn("created_at", own.body)
        self.assertIn("updated_at", own.body)

        unknown = self.request("GET", self.record_path(new_token()),
                               headers=harness.bearer(API_KEY_A), gw=1)
        self.assertProblem(unknown, 404, "not_found")

        other = self.request("GET", path, headers=harness.bearer(API_KEY_B),
                             gw=2)
        self.assertProblem(other, 404, "not_found")

        anonymous = self.request("GET", path, gw=2)
        self.assertProblem(anonymous, 401, "unauthenticated")

    def test_vendor_rejection_record_is_failed_final(self):
        self.mock.fail(count=1, status=400, code="InvalidParameter")
        body = valid_order()
        rejected = self.post_order(body, gw=0)
        self.assertProblem(rejected, 422, "upstream_rejected")
        record = self.request("GET", self.record_path(body["client_token"]),
                              headers=harness.bearer(API_KEY_A), gw=1)
        self.assertEqual(record.status, 200, record.body)
        self.assertEqual(record.body["state"], "failed_final")
        self.assertEqual(record.body["result"]["status"], 422)

    # Requests refused before the claim leave nothing behind

    def test_requests_refused_before_the_claim_leave_no_redis_key(self):
        cases = [
            ("401", self.post_order(valid_order(), key=None), 401),
            ("400", self.post_order(valid_order(period=0)), 400),
            ("413", self.post_order(valid_order(colour="x" * 20000)), 413),
            ("415", self.post_order(json.dumps(valid_order()),
                                    headers={"Content-Type": "text/plain"}),
             415),
        ]
        for name, resp, status in cases:
            self.assertEqual(resp.status, status, (name, resp.body))
        self.assertEqual(self.redis.keys(), [])
        self.assertEqual(self.mock.calls(), 0)


if __name__ == "__main__":
    harness.main()
