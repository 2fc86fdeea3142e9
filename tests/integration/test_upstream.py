"""
The vendor connection: the gateway checks the vendor's certificate and
host name, gives up on a connection that does not come up within
upstream.connect_timeout_ms, and tells a call that never left (nothing
for the vendor to act on: the ClientToken is freed at once) from one
whose outcome is unknown (the lease is kept).

Gateways, one per way the connection can fail, share one Redis:
  0  the mock, trusted                       the control
  1  the mock, under a CA it does not chain to
  2  a second mock whose certificate names another host
  3  a listener that accepts and never says a word
  4  the misnamed mock of 2, dialled by the name localhost
  5  a third mock whose certificate names only localhost, dialled by
     that name                                the control of 4

A call that timed out after it left keeps its lease: test_idempotency.py
covers that against the mock.

Run alone: ACRGW_BUILD_DIR=build python3 tests/integration/test_upstream.py
"""

import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import GatewayCase, log, new_token, valid_order  # noqa: E402

CONTROL, WRONG_CA, WRONG_NAME, SILENT, DNS_WRONG_NAME, DNS_CONTROL = \
    range(6)

CONNECT_TIMEOUT_MS = 300
UPSTREAM_TIMEOUT_MS = 1500
# Far longer than any wait below: a retry that is not 409 shows the
# gateway freed the token itself rather than letting its lease run out.
LEASE_MS = 20000
# Slack for a loaded 2-core machine on top of a timeout being measured.
SLACK_S = 0.7
# libevent arms timers from the time cached at the top of its loop turn,
# so a timer may fire a few milliseconds before its nominal length.
EARLY_S = 0.05


def make_cert(directory, subject_alt_name):
    """A self-signed certificate and key in directory; returns paths."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj",
         "/CN=acrgw-test", "-addext",
         "subjectAltName=" + subject_alt_name],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError("openssl req failed: %s"
                           % result.stderr.decode(errors="replace"))
    return cert, key


class SilentListener:
    """Accepts TCP connections on loopback and never reads or writes."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.stopping.set()
        self.thread.join(5.0)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class UpstreamSuite(GatewayCase):
    GATEWAYS = 1
    OVERRIDES = {
        "idempotency": {"lease_ms": LEASE_MS},
        "upstream": {"timeout_ms": UPSTREAM_TIMEOUT_MS,
                     "connect_timeout_ms": CONNECT_TIMEOUT_MS},
    }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        env = cls.env
        cls.silent = None
        cls.other_mock = None
        cls.dns_mock = None
        try:
            cls._start_broken_gateways(env)
        except BaseException:
            cls._stop_extras()
            env.close()
            raise

    @classmethod
    def _start_broken_gateways(cls, env):
        trusted_elsewhere = os.path.join(env.tmp, "other-ca")
        os.mkdir(trusted_elsewhere)
        other_ca, _ = make_cert(trusted_elsewhere, "IP:127.0.0.1")

        # Trusted, but issued to a name that is not the one dialled.
        misnamed = os.path.join(env.tmp, "misnamed")
        os.mkdir(misnamed)
        cert, key = make_cert(misnamed, "DNS:vendor.invalid")
        cls.other_mock = harness.Mock(misnamed, cert, key)
        cls.other_mock.start()

        # Named only by its DNS name, so a match can only come from the
        # host name the gateway dialled, not from its address.
        by_name = os.path.join(env.tmp, "by-name")
        os.mkdir(by_name)
        dns_cert, dns_key = make_cert(by_name, "DNS:localhost")
        cls.dns_mock = harness.Mock(by_name, dns_cert, dns_key)
        cls.dns_mock.start()

        cls.silent = SilentListener()
        log("other mock https :%d, localhost mock https :%d, silent "
            "listener :%d" % (cls.other_mock.https_port,
                              cls.dns_mock.https_port, cls.silent.port))

        def url(port, host="127.0.0.1"):
            return "https://%s:%d" % (host, port)

        variants = [
            {"upstream": {"ca_file": other_ca}},
            {"upstream": {"url": url(cls.other_mock.https_port),
                          "ca_file": cert}},
            {"upstream": {"url": url(cls.silent.port)}},
            {"upstream": {"url": url(cls.other_mock.https_port,
                                     "localhost"),
                          "ca_file": cert}},
            {"upstream": {"url": url(cls.dns_mock.https_port, "localhost"),
                          "ca_file": dns_cert}},
        ]
        for variant in variants:
            env.start_gateway(harness.deep_merge(cls.OVERRIDES, variant))

    @classmethod
    def _stop_extras(cls):
        if cls.silent is not None:
            cls.silent.close()
        if cls.other_mock is not None:
            cls.other_mock.stop()
        if cls.dns_mock is not None:
            # Its calls carried signatures too: hand them to the log scan,
            # which knows only the suite's own mock.
            cls.dns_mock.collect_signatures()
            cls.env.mock.signatures.update(cls.dns_mock.signatures)
            cls.env.mock.forgotten_calls += cls.dns_mock.forgotten()
            cls.dns_mock.stop()

    @classmethod
    def tearDownClass(cls):
        cls._stop_extras()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.other_mock.reset()
        self.dns_mock.reset()

    # Helpers

    def log_events(self, gw):
        return [o.get("event") for o in self.gw(gw).log_lines()]

    def assertNotSentAndFreed(self, gw, calls_before=0):
        """A purchase through gw that cannot connect: 502, the token
        freed at once, nothing at the vendor. Returns the first answer's
        latency."""
        body = valid_order()
        start = time.monotonic()
        resp = self.post_order(body, gw=gw)
        took = time.monotonic() - start
        self.assertProblem(resp, 502, "upstream_unavailable")
        self.assertIn("retry-after", resp.headers)

        # Not 409: the gateway knew nothing had left and freed the token.
        again = self.post_order(body, gw=gw)
        self.assertProblem(again, 502, "upstream_unavailable")
        self.assertIn("upstream_not_sent", self.log_events(gw))
        self.assertEqual(self.mock.calls(), calls_before)
        return took

    # The control: the same suite's set-up reaches the vendor.

    def test_trusted_vendor_creates_the_order(self):
        token = new_token()
        self.assertCreated(self.post_order(valid_order(token), gw=CONTROL),
                           token)
        self.assertEqual(self.mock.orders(), 1)

    def test_slow_answer_on_a_connection_that_came_up_is_awaited(self):
        # The connect timeout ends with the handshake: an answer later
        # than it, but within the call's timeout, still arrives.
        token = new_token()
        hold_ms = CONNECT_TIMEOUT_MS + 400
        self.mock.fail(count=1, delay_ms=hold_ms)
        start = time.monotonic()
        resp = self.post_order(valid_order(token), gw=CONTROL)
        took = time.monotonic() - start
        self.assertCreated(resp, token)
        self.assertGreaterEqual(took, hold_ms / 1000.0 - EARLY_S)
        self.assertEqual(self.mock.orders(), 1)

    # Certificates

    def test_certificate_from_an_untrusted_ca_is_refused_before_sending(
            self):
        took = self.assertNotSentAndFreed(WRONG_CA)
        log("untrusted CA refused in %.0f ms" % (took * 1000))

    def test_certificate_for_another_host_is_refused_before_sending(self):
        took = self.assertNotSentAndFreed(WRONG_NAME)
        self.assertEqual(self.other_mock.calls(), 0)
        log("wrong host name refused in %.0f ms" % (took * 1000))

    # Certificates checked by DNS name: the upstream url names a host that
    # the gateway resolves (evdns, from /etc/hosts) and then verifies.

    def test_certificate_for_another_dns_name_is_refused_before_sending(
            self):
        took = self.assertNotSentAndFreed(DNS_WRONG_NAME)
        self.assertEqual(self.other_mock.calls(), 0)
        # Refused by the certificate check, so the name did resolve and
        # connect: not a lookup failure that would look the same to a
        # client.
        tls = [o.get("openssl", "") for o in self.gw(DNS_WRONG_NAME)
               .log_lines() if o.get("event") == "upstream_tls_error"]
        self.assertTrue(any("certificate verify failed" in t for t in tls),
                        tls)
        log("wrong DNS name refused in %.0f ms" % (took * 1000))

    def test_certificate_for_the_dialled_dns_name_creates_the_order(self):
        token = new_token()
        self.assertCreated(self.post_order(valid_order(token),
                                           gw=DNS_CONTROL), token)
        self.assertEqual(self.dns_mock.orders(), 1)
        self.assertEqual(self.dns_mock.calls(), 1)
        self.assertEqual(self.mock.calls(), 0)

    # Connecting

    def test_connection_that_never_comes_up_gives_up_at_connect_timeout(
            self):
        took = self.assertNotSentAndFreed(SILENT)
        log("silent vendor given up after %.0f ms (connect timeout %d ms, "
            "call timeout %d ms)" % (took * 1000, CONNECT_TIMEOUT_MS,
                                     UPSTREAM_TIMEOUT_MS))
        self.assertGreaterEqual(took, CONNECT_TIMEOUT_MS / 1000.0 - EARLY_S)
        self.assertLess(took, CONNECT_TIMEOUT_MS / 1000.0 + SLACK_S)
        self.assertGreaterEqual(len(self.silent.accepted), 1)

    # What operators see

    def test_metrics_count_calls_that_never_left(self):
        self.assertNotSentAndFreed(WRONG_CA)
        resp = self.request("GET", "/metrics", gw=WRONG_CA)
        self.assertEqual(resp.status, 200)
        text = resp.body.decode()
        line = [ln for ln in text.splitlines() if ln.startswith(
            'acrgw_upstream_calls_total{result="not_sent"}')]
        self.assertEqual(len(line), 1, text)
        self.assertGreaterEqual(int(line[0].split()[-1]), 2)


if __name__ == "__main__":
    harness.main()
