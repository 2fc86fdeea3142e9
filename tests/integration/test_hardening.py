"""
Hardening of the gateway's edges: a graceful stop with work in flight, a
claim whose Redis reply was lost, and the HTTP details a strict client or
proxy relies on (HEAD, Allow, duplicate headers, structured-field tokens,
paths that are not UTF-8).

Requests that http.client will not write (repeated framing headers, raw
bytes in the path, two requests on one connection) go over a raw socket.

Run alone: ACRGW_BUILD_DIR=build python3 tests/integration/test_hardening.py
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (API_KEY_A, GatewayCase, log, new_token,  # noqa: E402
                     valid_order, wait_until)

# A lease far longer than any wait below, so a retry that succeeds in a
# few seconds shows the orphaned claim was undone, not that it expired.
LEASE_MS = 20000
# Room for a vendor call held long enough to stop the gateway under it.
UPSTREAM_TIMEOUT_MS = 3000
# How long the mock holds a call that must still be in flight at SIGTERM.
HOLD_MS = 1000
# The gateway undoes an orphaned claim this long after the lost reply.
ABANDON_DELAY_S = 1.0
# Budgets for things that should be prompt.
PROMPT_S = 1.0
EXIT_TIMEOUT_S = 10.0
RAW_TIMEOUT_S = 5.0


# ---------------------------------------------------------------------------
# A raw HTTP/1.1 connection, for requests http.client refuses to send

class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # [(lowercased name, value)]
        self.body = body

    def header(self, name):
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None

    def json(self):
        return json.loads(self.body)


class RawConnection:
    """
    One socket to the gateway. Responses are read from a shared buffer,
    so bytes a response should not have carried (a body after HEAD) show
    up at the start of the next one instead of being swallowed.
    """

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             RAW_TIMEOUT_S)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("gateway closed the connection; have %r"
                                  % self.buf[:200])
        self.buf += chunk

    def read_response(self, is_head=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise AssertionError("not a status line: %r" % lines[0])
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        resp = RawResponse(status, headers, b"")
        if is_head or status in (204, 304):
            return resp
        length = resp.header("content-length")
        if length is None:
            raise AssertionError("response without Content-Length: %r"
                                 % head)
        length = int(length)
        while len(self.buf) < length:
            self._fill()
        resp.body, self.buf = self.buf[:length], self.buf[length:]
        return resp

    def rest(self):
        """Whatever arrives until the gateway closes the connection."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out


def raw_request(method, path, headers, body=b""):
    """Request bytes with headers written as given, repeats included."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    lines += ["%s: %s" % (n, v) for n, v in headers]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def connect_refused(port):
    """True when a connect to port is refused (nothing listening)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), 0.5)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    sock.close()
    return False


def eval_calls(redis):
    """How many scripts Redis has run since it started."""
    total = 0
    for line in redis.cmd("INFO", "commandstats").splitlines():
        if line.startswith(("cmdstat_eval:", "cmdstat_evalsha:")):
            fields = dict(kv.split("=", 1)
                          for kv in line.split(":", 1)[1].split(","))
            total += int(fields["calls"])
    return total


class HardeningSuite(GatewayCase):
    GATEWAYS = 1
    OVERRIDES = {
        "idempotency": {"lease_ms": LEASE_MS},
        "upstream": {"timeout_ms": UPSTREAM_TIMEOUT_MS},
    }

    # Helpers

    def in_thread(self, fn):
        """Runs fn on a thread; returns (thread, dict that gets 'r' =
        (result or exception, monotonic time it ended))."""
        out = {}

        def run():
            try:
                result = fn()
            except Exception as exc:  # a failed exchange is a result here
                result = exc
            out["r"] = (result, time.monotonic())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, out

    def join(self, thread, out, timeout=15.0):
        thread.join(timeout)
        self.assertFalse(thread.is_alive(), "a client never got an answer")
        resp, ended = out["r"]
        self.assertNotIsInstance(resp, Exception, repr(resp))
        return resp, ended

    def stop_gateway_while_draining(self, gw):
        """
        SIGTERMs gw without waiting, polls until new connections are
        refused, and returns whether that happened while the process was
        still alive (draining) together with the time it took.
        """
        port = gw.port
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)

        def refused():
            alive = gw.proc.poll() is None
            return (alive,) if connect_refused(port) else None

        (alive,) = wait_until(refused, 2.0, "gateway to close its listener")
        return alive, time.monotonic() - start

    def wait_exit(self, gw):
        """Waits for gw to exit on its own; records the code for the
        suite's teardown check and returns it."""
        try:
            gw.proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Still draining past its grace: kill() signals again, waits
            # and the exit code tells.
            pass
        return gw.kill(signal.SIGTERM)

    def record_path(self, token):
        return "/v1/instances/requests/" + urllib.parse.quote(token, safe="")

    def record_key(self, token, tenant="team-a"):
        return "%sidem:%s:%s" % (harness.KEY_PREFIX, tenant, token)

    def raw(self, gw=0):
        return RawConnection(self.gw(gw).port)

    def assertRawProblem(self, resp, status, code):
        self.assertEqual(resp.status, status, resp.body)
        self.assertTrue((resp.header("content-type") or "")
                        .startswith("application/problem+json"),
                        resp.headers)
        body = resp.json()
        self.assertEqual(body.get("status"), status, body)
        self.assertEqual(body.get("code"), code, body)
        return body

    def assertNothingStored(self):
        self.assertEqual(self.redis.keys(), [])
        self.assertEqual(self.mock.calls(), 0)

    # 1. SIGTERM with purchases in flight

    def test_sigterm_lets_an_in_flight_purchase_finish_and_refuses_new(
            self):
        gw = self.gw()
        body = valid_order()
        self.mock.fail(count=1, delay_ms=HOLD_MS, commit=True)
        thread, out = self.in_thread(lambda: self.post_order(body))
        self.mock.wait_calls(1, timeout=5.0)

        signalled = time.monotonic()
        alive, took = self.stop_gateway_while_draining(gw)
        log("listener closed %.0f ms after SIGTERM, gateway alive: %s"
            % (took * 1000, alive))
        self.assertTrue(alive, "connections were refused only once the "
                        "gateway had exited, not while draining")

        resp, answered = self.join(thread, out)
        self.assertCreated(resp, body["client_token"])
        self.assertEqual(resp.headers.get("connection", "").lower(), "close")
        self.assertGreater(answered, signalled)
        self.assertEqual(self.wait_exit(gw), 0)
        self.assertEqual(self.mock.orders(), 1)

    def test_sigterm_with_four_purchases_in_flight_answers_all_201(self):
        gw = self.gw()
        bodies = [valid_order() for _ in range(4)]
        self.mock.fail(count=len(bodies), delay_ms=HOLD_MS, commit=True)
        clients = [self.in_thread(lambda b=b: self.post_order(b))
                   for b in bodies]
        self.mock.wait_calls(len(bodies), timeout=5.0)

        alive, _ = self.stop_gateway_while_draining(gw)
        self.assertTrue(alive)
        for body, (thread, out) in zip(bodies, clients):
            resp, _ = self.join(thread, out)
            self.assertCreated(resp, body["client_token"])
        self.assertEqual(self.wait_exit(gw), 0)
        self.assertEqual(self.mock.orders(), len(bodies))

    def test_sigterm_after_a_client_reset_mid_purchase_exits_promptly(
            self):
        # A client that resets its connection while its purchase is
        # upstream: the purchase is still recorded, and the answer that
        # can no longer be written must not hold the drain for its grace.
        gw = self.gw()
        body = valid_order()
        self.mock.fail(count=1, delay_ms=HOLD_MS // 2, commit=True)
        conn = self.raw()
        payload = json.dumps(body).encode()
        conn.send(raw_request("POST", "/v1/instances", [
            ("Authorization", "Bearer " + API_KEY_A),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload)))], payload))
        self.mock.wait_calls(1, timeout=5.0)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        conn.close()

        key = self.record_key(body["client_token"])
        wait_until(lambda: self.redis.cmd("HGET", key, "state") ==
                   "completed", 5.0, "the purchase to be recorded")
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(gw), 0)
        took = time.monotonic() - start
        log("exit %.0f ms after SIGTERM, with a reset client behind"
            % (took * 1000))
        self.assertLess(took, PROMPT_S)
        self.assertNotIn("drain_timeout",
                         [o.get("event") for o in gw.log_lines()])
        self.assertEqual(self.mock.orders(), 1)

    def test_unknown_outcome_answers_retry_after_the_lease(self):
        # After a timeout or a reset the token is held for the lease: a
        # Retry-After shorter than that would only earn the client 409s.
        for plan, status, code in (
                ({"delay_ms": UPSTREAM_TIMEOUT_MS + 500}, 504,
                 "upstream_timeout"),
                ({"reset": True}, 502, "upstream_unavailable")):
            self.mock.fail(count=1, commit=True, **plan)
            resp = self.post_order(valid_order())
            self.assertProblem(resp, status, code)
            retry_after = int(resp.headers["retry-after"])
            log("%d answered Retry-After: %d (lease %d ms)"
                % (status, retry_after, LEASE_MS))
            self.assertLessEqual(retry_after, LEASE_MS // 1000)
            self.assertGreaterEqual(
                retry_after, (LEASE_MS - UPSTREAM_TIMEOUT_MS) // 1000 - 2)

    # 2. SIGTERM while a duplicate waits on the first attempt

    def test_sigterm_answers_a_waiting_duplicate_409_at_once(self):
        gw = self.gw()
        body = valid_order()
        # Long enough to see the waiter settle into its wait first.
        self.mock.fail(count=1, delay_ms=2000, commit=True)
        first_thread, first = self.in_thread(lambda: self.post_order(body))
        self.mock.wait_calls(1, timeout=5.0)

        # A waiter re-claims on a growing interval (25 ms, 50 ms, ...):
        # seeing three claims means it is in its wait loop, and a count
        # that holds still over a poll means it is between claims.
        before = eval_calls(self.redis)
        waiter_thread, waiter = self.in_thread(lambda: self.post_order(
            body, headers={"Prefer": "wait=10"}))
        last = [None]

        def settled_in_wait():
            n = eval_calls(self.redis)
            ok = n >= before + 3 and n == last[0]
            last[0] = n
            return ok

        wait_until(settled_in_wait, 5.0, "the duplicate to be waiting")
        self.assertIsNone(first.get("r"), "the first call already ended")

        signalled = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        busy, busy_at = self.join(waiter_thread, waiter)
        self.assertProblem(busy, 409, "request_in_progress")
        self.assertTrue(busy.headers.get("retry-after", "").isdigit(),
                        busy.headers)
        log("waiting duplicate answered %.0f ms after SIGTERM"
            % ((busy_at - signalled) * 1000))
        self.assertLess(busy_at - signalled, PROMPT_S)

        original, original_at = self.join(first_thread, first)
        self.assertCreated(original, body["client_token"])
        self.assertLess(busy_at, original_at)
        self.assertEqual(self.wait_exit(gw), 0)
        self.assertEqual(self.mock.orders(), 1)

    # 3. A claim whose reply Redis never sent

    def test_claim_lost_to_a_frozen_redis_is_undone_within_seconds(self):
        gw = self.gw()
        body = valid_order()
        key = self.record_key(body["client_token"])
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            resp = self.post_order(body, timeout=10.0)
            took = time.monotonic() - start
            self.assertProblem(resp, 503, "unavailable")
            self.assertLess(took, PROMPT_S)
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()

        # The claim was in Redis's socket buffer: it runs on waking and
        # leaves a lease that no attempt is using.
        state = wait_until(lambda: self.redis.cmd("HGET", key, "state"),
                           0.5, "the orphaned claim to land")
        self.assertEqual(state, "in_flight")

        statuses = []
        deadline = resumed + LEASE_MS / 1000.0 / 2
        while True:
            resp = self.post_order(body)
            statuses.append(resp.status)
            if resp.status != 409 or time.monotonic() >= deadline:
                break
            self.assertProblem(resp, 409, "request_in_progress")
            time.sleep(0.2)
        settled = time.monotonic() - resumed
        log("after SIGCONT: %d x 409, 201 after %.0f ms (lease %d ms)"
            % (statuses.count(409), settled * 1000, LEASE_MS))
        self.assertCreated(resp, body["client_token"])
        self.assertNotReplayed(resp)
        self.assertLess(settled, ABANDON_DELAY_S + 2.0)
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["calls"], 1)
        self.assertTrue(any(o.get("event") == "claim_undone"
                            for o in gw.log_lines()))

    # 4. HEAD

    def test_head_healthz_has_get_length_and_no_body_on_keep_alive(self):
        with self.raw() as conn:
            conn.send(raw_request("GET", "/healthz", []))
            got = conn.read_response()
            self.assertEqual(got.status, 200)
            self.assertTrue(got.body)

            conn.send(raw_request("HEAD", "/healthz", []))
            head = conn.read_response(is_head=True)
            self.assertEqual(head.status, 200)
            self.assertEqual(head.header("content-length"),
                             str(len(got.body)))

            # A body after the HEAD answer would be read here as the
            # start of this one.
            conn.send(raw_request("GET", "/healthz",
                                  [("Connection", "close")]))
            again = conn.read_response()
            self.assertEqual(again.status, 200)
            self.assertEqual(again.body, got.body)
            self.assertEqual(again.json(), {"status": "ok"})
            self.assertEqual(conn.rest(), b"")

    # 5. 405 and Allow

    def test_405_carries_an_allow_header(self):
        resp = self.request("PUT", "/v1/instances", valid_order(),
                            headers=harness.bearer(API_KEY_A))
        self.assertProblem(resp, 405, "method_not_allowed")
        self.assertEqual(resp.headers.get("allow"), "POST")

        resp = self.request("POST", "/healthz", {})
        self.assertProblem(resp, 405, "method_not_allowed")
        self.assertEqual(resp.headers.get("allow"), "GET, HEAD")

        resp = self.request("DELETE", self.record_path(new_token()),
                            headers=harness.bearer(API_KEY_A))
        self.assertProblem(resp, 405, "method_not_allowed")
        self.assertEqual(resp.headers.get("allow"), "GET")
        self.assertNothingStored()

    # 6. Headers that must appear once

    def post_raw(self, headers, body):
        data = json.dumps(body).encode()
        with self.raw() as conn:
            conn.send(raw_request("POST", "/v1/instances", headers, data))
            return conn.read_response()

    def test_two_content_length_headers_are_400_duplicate_header(self):
        body = valid_order()
        length = str(len(json.dumps(body).encode()))
        resp = self.post_raw([("Authorization", "Bearer " + API_KEY_A),
                              ("Content-Type", "application/json"),
                              ("Content-Length", length),
                              ("Content-Length", length)], body)
        self.assertRawProblem(resp, 400, "duplicate_header")
        self.assertNothingStored()

    def test_two_authorization_headers_are_401_even_when_both_valid(self):
        body = valid_order()
        length = str(len(json.dumps(body).encode()))
        resp = self.post_raw([("Authorization", "Bearer " + API_KEY_A),
                              ("Authorization", "Bearer " + API_KEY_A),
                              ("Content-Type", "application/json"),
                              ("Content-Length", length)], body)
        self.assertRawProblem(resp, 401, "unauthenticated")
        self.assertNothingStored()

    def test_two_idempotency_key_headers_are_400_duplicate_header(self):
        body = valid_order()
        token = body.pop("client_token")
        length = str(len(json.dumps(body).encode()))
        resp = self.post_raw([("Authorization", "Bearer " + API_KEY_A),
                              ("Content-Type", "application/json"),
                              ("Idempotency-Key", token),
                              ("Idempotency-Key", token),
                              ("Content-Length", length)], body)
        self.assertRawProblem(resp, 400, "duplicate_header")
        self.assertNothingStored()

    def send_with_transfer_encoding(self, codings, body):
        """Sends a purchase framed by the Transfer-Encoding headers given,
        then a smuggled GET; returns the one response and what followed
        it before the gateway closed."""
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        headers = [("Authorization", "Bearer " + API_KEY_A),
                   ("Content-Type", "application/json")]
        headers += [("Transfer-Encoding", c) for c in codings]
        with self.raw() as conn:
            conn.send(raw_request("POST", "/v1/instances", headers,
                                  body + smuggled))
            resp = conn.read_response()
            return resp, conn.rest()

    def test_unknown_transfer_encoding_is_501_and_the_body_is_no_request(
            self):
        # libevent would pass over a gzip body and read it as the next
        # request: one a proxy in front never saw. The gateway refuses
        # the framing and closes, so the smuggled bytes are never parsed.
        for coding in ("gzip", "identity", "GZIP"):
            resp, rest = self.send_with_transfer_encoding([coding], b"")
            self.assertRawProblem(resp, 501,
                                  "unsupported_transfer_encoding")
            self.assertEqual(resp.header("connection"), "close")
            self.assertEqual(rest, b"", coding)
        self.assertNothingStored()

    def test_coding_lists_and_repeated_transfer_encoding_are_refused(self):
        # libevent answers these itself (400, its own HTML page) and
        # closes: still one answer, and the smuggled request is not run.
        for codings in (["chunked, identity"], ["chunked", "chunked"]):
            resp, rest = self.send_with_transfer_encoding(
                codings, b"0\r\n\r\n")
            self.assertEqual(resp.status, 400, codings)
            self.assertEqual(rest, b"", codings)
        self.assertNothingStored()

    def test_chunked_body_still_buys(self):
        body = json.dumps(valid_order()).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        with self.raw() as conn:
            conn.send(raw_request("POST", "/v1/instances", [
                ("Authorization", "Bearer " + API_KEY_A),
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "Chunked")], chunked))
            resp = conn.read_response()
        self.assertEqual(resp.status, 201, resp.body)
        self.assertEqual(self.mock.orders(), 1)

    def test_http11_without_exactly_one_host_is_400_bad_host(self):
        for hosts in (b"", b"Host: a\r\nHost: b\r\n"):
            with self.raw() as conn:
                conn.send(b"GET /healthz HTTP/1.1\r\n" + hosts + b"\r\n")
                self.assertRawProblem(conn.read_response(), 400, "bad_host")
        # HTTP/1.0 has no such rule; its answer ends with the connection.
        with self.raw() as conn:
            conn.send(b"GET /healthz HTTP/1.0\r\n\r\n")
            self.assertTrue(conn.rest().startswith(b"HTTP/1.0 200 "))

    # 7. Idempotency-Key as a structured-field string

    def test_quoted_idempotency_key_is_the_same_token_as_the_body_one(self):
        body = valid_order()
        token = body["client_token"]
        first = self.post_order(body)
        self.assertCreated(first, token)

        headerless = dict(body)
        del headerless["client_token"]
        again = self.post_order(headerless,
                                headers={"Idempotency-Key": '"%s"' % token})
        self.assertEqual(again.status, 201, again.body)
        self.assertReplayed(again)
        self.assertEqual(again.body, first.body)
        self.assertEqual(self.mock.calls(), 1)

    def test_quoted_idempotency_key_decodes_its_escapes(self):
        suffix = uuid.uuid4().hex[:12]
        for header, token in (('"a\\"b-%s"' % suffix, 'a"b-%s' % suffix),
                              ('"a\\\\b-%s"' % suffix, 'a\\b-%s' % suffix)):
            body = valid_order()
            del body["client_token"]
            resp = self.post_order(body, headers={"Idempotency-Key": header})
            self.assertCreated(resp, token)
            record = self.request("GET", self.record_path(token),
                                  headers=harness.bearer(API_KEY_A))
            self.assertEqual(record.status, 200, record.body)
            self.assertEqual(record.body["client_token"], token)
            self.assertEqual(record.body["state"], "completed")
        self.assertEqual(self.mock.orders(), 2)

    def test_malformed_quoted_idempotency_key_is_400_naming_client_token(
            self):
        for header in ('"abc', '"a\\x"', '"a"b"'):
            body = valid_order()
            del body["client_token"]
            resp = self.post_order(body, headers={"Idempotency-Key": header})
            self.assertProblem(resp, 400, "invalid_request")
            fields = [e.get("field") for e in resp.body.get("errors", [])]
            self.assertIn("client_token", fields, (header, resp.body))
        self.assertNothingStored()

    # 8. A path that is not UTF-8

    def test_path_with_invalid_utf8_is_404_and_logged(self):
        gw = self.gw()
        with self.raw() as conn:
            conn.send(b"GET /zz\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
            resp = conn.read_response()
        self.assertRawProblem(resp, 404, "not_found")
        req_id = resp.header("x-request-id")
        self.assertTrue(req_id, resp.headers)

        def logged():
            for obj in gw.access_lines():
                if obj.get("req_id") == req_id:
                    return obj
            return None

        line = wait_until(logged, 5.0, "the access line of %s" % req_id)
        self.assertEqual(line.get("status"), 404, line)
        self.assertEqual(line.get("path"), "/zz?", line)
        self.assertEqual(line.get("method"), "GET", line)


if __name__ == "__main__":
    harness.main()
