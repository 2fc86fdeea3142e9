"""
The runner the acr-gateway integration suites share.

Each suite (one TestCase class) gets its own temp dir holding a throwaway
redis-server, a TLS certificate made for this run, the mock upstream and
one or more gateways, all on loopback. Readiness is polled with a deadline;
nothing waits a fixed time. Every child process is stopped in
tearDownClass, again from atexit, and the kernel kills what is left if this
interpreter dies first (PR_SET_PDEATHSIG), so a failed or killed run leaves
no process behind.

Only the Python standard library is used.
"""

import atexit
import collections
import concurrent.futures
import copy
import ctypes
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("ACRGW_BUILD_DIR") or os.path.join(SOURCE_DIR,
                                                              "build")
GATEWAY_BIN = os.path.join(BUILD_DIR, "acr-gateway")
MOCK_BIN = os.path.join(BUILD_DIR, "mock-upstream")

API_KEY_A = "key-team-a-0123456789"
API_KEY_B = "key-team-b-0123456789"
ACCESS_KEY_ID = "testid"
ACCESS_KEY_SECRET = "testsecret-NOT-REAL-123"
# A third tenant buys through an account that also sends an STS
# SecurityToken. The mock knows one access key, so this account signs with
# it too; only the token sets it apart. The token holds characters the
# form must percent-encode, so a log scan must look for its encoded forms.
API_KEY_C = "key-team-c-0123456789"
STS_TENANT = "team-c"
SECURITY_TOKEN = "CAIS-sts-NOT-REAL/Token+Value=="
KEY_PREFIX = "acrgw:"

# Redis cannot be told to pick its own port and report it, so ports are
# drawn from a range below the kernel's ephemeral range, where no outgoing
# connection will have taken one.
REDIS_PORT_MIN = 20000
REDIS_PORT_MAX = 32000
REDIS_PORT_TRIES = 20

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.02
# Bursts of /readyz that must all be 200 before a gateway counts as ready.
READY_BURSTS = 3
# How long a retry loop may wait out a held lease (lease_ms is 3000).
SETTLE_TIMEOUT_S = 15.0

# What a sanitizer writes when it finds a bug in a gateway or the mock.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "WARNING: AddressSanitizer")

# Log fields that must never exist, whatever their value.
FORBIDDEN_LOG_FIELDS = ("signature", "authorization", "api_key",
                        "access_key_secret", "secret", "security_token")


def log(msg):
    """Figures and progress for the run log (stdout, flushed at once)."""
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Child processes

_children = []
_children_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec. If the harness is killed
    # (ctest timeout, SIGKILL) the kernel then kills the child too. The
    # signal follows the thread that forked, so spawn only from the main
    # thread, which lives as long as the run.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv, stdout, stderr, env=None):
    """Starts a child that the harness will reap whatever happens."""
    assert threading.current_thread() is threading.main_thread(), \
        "spawn children from the main thread only"
    child_env = dict(os.environ)
    # Sanitizer reports go to the child's log, where the teardown scan
    # finds them; leaks are reported at a clean exit.
    child_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    child_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if env:
        child_env.update(env)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, env=child_env,
                            preexec_fn=_die_with_parent)
    with _children_lock:
        _children.append(proc)
    return proc


def stop_process(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
    """Signals proc and waits for it; SIGKILL if it outlives timeout."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with _children_lock:
        if proc in _children:
            _children.remove(proc)
    return proc.returncode


def _kill_all_children():
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


atexit.register(_kill_all_children)


def wait_until(predicate, timeout, what, interval=POLL_INTERVAL_S):
    """Polls predicate until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1f s waiting for %s"
                               % (timeout, what))
        time.sleep(interval)


def read_lines(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def json_lines(path):
    """The lines of path that are JSON objects, parsed."""
    out = []
    for line in read_lines(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def tail(path, n=40):
    return "\n".join(read_lines(path)[-n:])


# ---------------------------------------------------------------------------
# Redis: a throwaway server and a minimal RESP client

class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


def _read_reply(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("redis closed the connection")
        return data[:-2].decode(errors="surrogateescape")
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read_reply(f) for _ in range(n)]
    raise ConnectionError("unexpected RESP reply %r" % line[:40])


def redis_call(port, *args, timeout=2.0):
    """Sends one command to 127.0.0.1:port and returns the parsed reply."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if not isinstance(arg, bytes):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(b"".join(out))
        with sock.makefile("rb") as f:
            return _read_reply(f)


class Redis:
    def __init__(self, tmpdir):
        self.dir = tmpdir
        self.log_path = os.path.join(tmpdir, "redis.log")
        self.port = None
        self.proc = None

    def _launch(self, port):
        logf = open(self.log_path, "ab")
        try:
            proc = spawn(["redis-server", "--port", str(port),
                          "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", self.dir],
                         stdout=logf, stderr=subprocess.STDOUT)
        finally:
            logf.close()

        # Ready once our own process answers: a PONG could come from some
        # other server already on that port, so match the process id too.
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                stop_process(proc)
                return None
            try:
                if redis_call(port, "PING", timeout=0.5) == "PONG":
                    info = redis_call(port, "INFO", "server", timeout=0.5)
                    if "process_id:%d\r" % proc.pid in info:
                        return proc
                    stop_process(proc)
                    return None
            except (OSError, ConnectionError):
                pass
            time.sleep(POLL_INTERVAL_S)
        stop_process(proc, signal.SIGKILL)
        return None

    def start(self):
        """Starts Redis, on the same port as before if it ran already."""
        assert self.proc is None or self.proc.poll() is not None
        if self.port is not None:
            # The port was ours a moment ago; give the kernel a few tries
            # in case a previous socket is still being torn down.
            for _ in range(5):
                self.proc = self._launch(self.port)
                if self.proc is not None:
                    return
            raise RuntimeError("redis-server failed to restart on port %d:\n%s"
                               % (self.port, tail(self.log_path)))
        for _ in range(REDIS_PORT_TRIES):
            port = random.randint(REDIS_PORT_MIN, REDIS_PORT_MAX)
            proc = self._launch(port)
            if proc is not None:
                self.port, self.proc = port, proc
                return
        raise RuntimeError("redis-server did not start on any port:\n%s"
                           % tail(self.log_path))

    def stop(self):
        stop_process(self.proc, signal.SIGTERM)
        self.proc = None

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def cmd(self, *args):
        return redis_call(self.port, *args)

    def flushall(self):
        return self.cmd("FLUSHALL")

    def keys(self, pattern=KEY_PREFIX + "*"):
        return sorted(self.cmd("KEYS", pattern))


# ---------------------------------------------------------------------------
# HTTP client

Response = collections.namedtuple("Response", "status headers body")


def request(method, path, body=None, headers=None, port=None, timeout=30.0):
    """
    One HTTP/1.1 request to 127.0.0.1:port on a fresh connection. body may
    be a dict or list (sent as JSON), str or bytes (sent as is). A
    Content-Type of application/json is added when there is a body and the
    caller named none; a header whose value is None is not sent. Returns
    Response(status, headers lowercased, parsed JSON or raw bytes).
    """
    assert port is not None
    hdrs = {}
    for name, value in (headers or {}).items():
        hdrs[name] = value
    if body is not None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not any(n.lower() == "content-type" for n in hdrs):
            hdrs["Content-Type"] = "application/json"
    hdrs = {n: v for n, v in hdrs.items() if v is not None}

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        out_headers = {}
        for name, value in resp.getheaders():
            name = name.lower()
            if name in out_headers:
                out_headers[name] += ", " + value
            else:
                out_headers[name] = value
    finally:
        conn.close()

    parsed = raw
    if "json" in out_headers.get("content-type", ""):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
    return Response(resp.status, out_headers, parsed)


def bearer(key):
    return {"Authorization": "Bearer " + key}


def new_token(tag="t"):
    return "%s-%s" % (tag, uuid.uuid4().hex)


def valid_order(token=None, **changes):
    """
    A valid order body with changes applied; a change whose value is
    DROP removes that field.
    """
    body = {
        "client_token": token if token is not None else new_token(),
        "instance_type": "Standard",
        "instance_name": "team-registry-01",
        "region": "cn-shanghai",
        "default_oss_bucket": True,
        "period": 12,
    }
    for name, value in changes.items():
        if value is DROP:
            body.pop(name, None)
        else:
            body[name] = value
    return body


class _Drop:
    def __repr__(self):
        return "DROP"


DROP = _Drop()


# ---------------------------------------------------------------------------
# The mock upstream

class Mock:
    def __init__(self, tmpdir, cert, key):
        self.dir = tmpdir
        self.cert, self.key = cert, key
        self.out_path = os.path.join(tmpdir, "mock.out")
        self.log_path = os.path.join(tmpdir, "mock.log")
        self.commit_log = os.path.join(tmpdir, "orders.log")
        self.proc = None
        self.http_port = self.https_port = None
        # Every Signature value the mock received, for the log scan. The
        # mock forgets them on reset, so they are read before each reset
        # and before the mock stops, as well as whenever a test reads
        # stats.
        self.signatures = set()
        # Calls the mock forgot before the harness read them: their
        # signatures escape the scan, which then fails.
        self.forgotten_calls = 0
        self._dropped_since_reset = 0

    def start(self):
        if not os.access(MOCK_BIN, os.X_OK):
            raise RuntimeError("no mock upstream at %s; build target "
                               "mock-upstream" % MOCK_BIN)
        out = open(self.out_path, "wb")
        err = open(self.log_path, "ab")
        try:
            self.proc = spawn([MOCK_BIN, "--http-port", "0",
                               "--https-port", "0", "--cert", self.cert,
                               "--key", self.key, "--access-key",
                               ACCESS_KEY_ID + ":" + ACCESS_KEY_SECRET,
                               "--commit-log", self.commit_log],
                              stdout=out, stderr=err)
        finally:
            out.close()
            err.close()

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError("mock-upstream exited with %s:\n%s"
                                   % (self.proc.returncode,
                                      tail(self.log_path)))
            for obj in json_lines(self.out_path):
                if obj.get("event") == "listening":
                    return obj
            return None

        obj = wait_until(listening, START_TIMEOUT_S, "mock-upstream to listen")
        self.http_port = int(obj["http_port"])
        self.https_port = int(obj["https_port"])

    def stop(self):
        code = stop_process(self.proc)
        self.proc = None
        return code

    def _control(self, method, path, body=None):
        resp = request(method, path, body=body, port=self.http_port,
                       timeout=10.0)
        if resp.status != 200:
            raise RuntimeError("mock %s %s: %d %r" % (method, path,
                                                      resp.status, resp.body))
        return resp.body

    def stats(self):
        stats = self._control("GET", "/_mock/stats")
        for call in stats["recent"]:
            if call.get("signature"):
                self.signatures.add(call["signature"])
        self._dropped_since_reset = stats["recent_dropped"]
        return stats

    def collect_signatures(self):
        """Reads the signatures of the calls since the last reset, if the
        mock is running."""
        if self.proc is not None and self.proc.poll() is None:
            self.stats()

    def reset(self):
        self.collect_signatures()
        self._control("POST", "/_mock/reset")
        self.forgotten_calls += self._dropped_since_reset
        self._dropped_since_reset = 0

    def forgotten(self):
        """How many calls' signatures the harness never saw."""
        return self.forgotten_calls + self._dropped_since_reset

    def recent(self):
        """What each vendor call since the reset carried, oldest first:
        dicts of client_token, nonce and signature."""
        return self.stats()["recent"]

    def fail(self, **plan):
        """Arms a failure plan: count, status, code, delay_ms, commit,
        reset."""
        self._control("POST", "/_mock/fail", plan)

    def orders(self):
        return self.stats()["orders"]

    def committed(self):
        """The commit log: one dict per order the mock created."""
        return json_lines(self.commit_log)

    def committed_instance(self, upstream_token):
        """The instance id the mock created for that ClientToken, or
        None."""
        for entry in self.committed():
            if entry.get("client_token") == upstream_token:
                return entry.get("instance_id")
        return None

    def calls(self):
        return self.stats()["calls"]

    def wait_calls(self, at_least, timeout=10.0):
        return wait_until(lambda: self.calls() >= at_least, timeout,
                          "mock calls >= %d" % at_least)


# ---------------------------------------------------------------------------
# Gateways

def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def signature_forms(signature):
    """
    The ways a Signature value could show in a log: as is, percent-encoded
    as it travels in the form (with upper- or lowercase hex), and with the
    slashes JSON may escape.
    """
    encoded = urllib.parse.quote(signature, safe="-_.~")
    forms = {signature, encoded, signature.replace("/", "\\/")}
    forms.add("".join(part if i == 0 else part[:2].lower() + part[2:]
                      for i, part in enumerate(encoded.split("%"))))
    return forms


def deep_merge(base, changes):
    out = copy.deepcopy(base)
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = deep_merge(out[name], value)
        else:
            out[name] = copy.deepcopy(value)
    return out


class Gateway:
    def __init__(self, index, tmpdir, config):
        self.index = index
        self.config = config
        self.config_path = os.path.join(tmpdir, "gateway-%d.json" % index)
        self.log_path = os.path.join(tmpdir, "gateway-%d.log" % index)
        self.proc = None
        self.port = None
        self.exit_codes = []

    def start(self):
        if not os.access(GATEWAY_BIN, os.X_OK):
            raise RuntimeError("no gateway at %s; build target acr-gateway"
                               % GATEWAY_BIN)
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        # Skip what an earlier run of this gateway logged, so its old
        # "listening" line is not taken for the new one.
        seen = len(read_lines(self.log_path))
        logf = open(self.log_path, "ab")
        try:
            self.proc = spawn([GATEWAY_BIN, "--config", self.config_path],
                              stdout=logf, stderr=logf)
        finally:
            logf.close()

        def listening():
            for line in read_lines(self.log_path)[seen:]:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and obj.get("event") == "listening":
                    return obj
            if self.proc.poll() is not None:
                raise RuntimeError("gateway %d exited with %s:\n%s"
                                   % (self.index, self.proc.returncode,
                                      tail(self.log_path)))
            return None

        obj = wait_until(listening, START_TIMEOUT_S,
                         "gateway %d to listen" % self.index)
        self.port = int(obj["port"])
        return self

    def kill(self, sig=signal.SIGTERM):
        """Sends sig and waits for the gateway to go."""
        code = stop_process(self.proc, sig)
        if code is not None:
            self.exit_codes.append((sig, code))
        self.proc = None
        return code

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self):
        return json_lines(self.log_path)

    def access_lines(self):
        return [o for o in self.log_lines() if o.get("event") == "access"]


# ---------------------------------------------------------------------------
# The world of one suite

class Env:
    def __init__(self, name):
        self.tmp = tempfile.mkdtemp(prefix="acrgw-%s-" % name)
        self.cert = os.path.join(self.tmp, "cert.pem")
        self.key = os.path.join(self.tmp, "key.pem")
        self.redis = Redis(self.tmp)
        self.mock = Mock(self.tmp, self.cert, self.key)
        self.gateways = []
        atexit.register(self._remove_tmp)

    def start(self, gateways=1, overrides=None):
        self._make_cert()
        self.redis.start()
        self.mock.start()
        log("env %s: redis :%d, mock http :%d https :%d"
            % (self.tmp, self.redis.port,
               self.mock.http_port, self.mock.https_port))
        for _ in range(gateways):
            self.start_gateway(overrides)

    def _make_cert(self):
        result = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", self.key, "-out", self.cert, "-days", "2",
             "-subj", "/CN=localhost", "-addext",
             "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError("openssl req failed: %s"
                               % result.stderr.decode(errors="replace"))

    def base_config(self):
        return {
            "listen": {"address": "127.0.0.1", "port": 0},
            "server": {"workers": 2, "body_max_bytes": 16384},
            "redis": {"host": "127.0.0.1", "port": self.redis.port,
                      "command_timeout_ms": 200, "key_prefix": KEY_PREFIX},
            "idempotency": {"ttl_s": 3600, "lease_ms": 3000,
                            "wait_max_s": 20, "retry_after_s": 1},
            "upstream": {"url": "https://127.0.0.1:%d" % self.mock.https_port,
                         "ca_file": self.cert, "timeout_ms": 1500,
                         "max_attempts": 3},
            "log": {"level": "info"},
            "accounts": {"main": {"site": "cn",
                                  "access_key_id": ACCESS_KEY_ID,
                                  "access_key_secret": ACCESS_KEY_SECRET},
                         "sts": {"site": "cn",
                                 "access_key_id": ACCESS_KEY_ID,
                                 "access_key_secret": ACCESS_KEY_SECRET,
                                 "security_token": SECURITY_TOKEN}},
            "tenants": {"team-a": {"account": "main"},
                        "team-b": {"account": "main"},
                        STS_TENANT: {"account": "sts"}},
            "api_keys": [
                {"tenant": "team-a", "sha256": sha256_hex(API_KEY_A)},
                {"tenant": "team-b", "sha256": sha256_hex(API_KEY_B)},
                {"tenant": STS_TENANT, "sha256": sha256_hex(API_KEY_C)},
            ],
        }

    def start_gateway(self, overrides=None):
        config = deep_merge(self.base_config(), overrides or {})
        gw = Gateway(len(self.gateways), self.tmp, config)
        self.gateways.append(gw)
        gw.start()
        return gw

    def forbidden_texts(self):
        texts = {API_KEY_A, API_KEY_B, API_KEY_C, ACCESS_KEY_SECRET,
                 "Signature="}
        # The STS token in every form a form-encoded call could show it.
        texts.update(signature_forms(SECURITY_TOKEN))
        for signature in self.mock.signatures:
            if len(signature) >= 8:
                texts.update(signature_forms(signature))
        return texts

    def scan_logs(self):
        """
        Problems found in the gateway logs: secrets, fields that must not
        exist, sanitizer reports. Returns a list of strings; empty is good.
        """
        problems = []
        if self.mock.forgotten():
            problems.append("the mock forgot %d calls before the harness "
                            "read their signatures" % self.mock.forgotten())
        texts = self.forbidden_texts()
        for gw in self.gateways:
            name = os.path.basename(gw.log_path)
            for n, line in enumerate(read_lines(gw.log_path), 1):
                for text in texts:
                    if text in line:
                        problems.append("%s:%d holds a secret (%s...)"
                                        % (name, n, text[:4]))
                for mark in SANITIZER_MARKS:
                    if mark in line:
                        problems.append("%s:%d sanitizer: %s"
                                        % (name, n, line.strip()[:200]))
            for obj in gw.log_lines():
                for field in obj:
                    if field.lower() in FORBIDDEN_LOG_FIELDS:
                        problems.append("%s has a log field %r (event %s)"
                                        % (name, field, obj.get("event")))
        for mark in SANITIZER_MARKS:
            for n, line in enumerate(read_lines(self.mock.log_path), 1):
                if mark in line:
                    problems.append("mock.log:%d sanitizer: %s"
                                    % (n, line.strip()[:200]))
        return problems

    def close(self):
        """Stops everything, scans the logs, removes the temp dir."""
        for gw in self.gateways:
            gw.kill(signal.SIGTERM)
        self.mock.collect_signatures()
        self.mock.stop()
        self.redis.stop()
        problems = self.scan_logs()
        # A gateway asked to stop must stop cleanly: a non-zero status
        # after SIGTERM is a crash or a sanitizer's leak report.
        for gw in self.gateways:
            for sig, code in gw.exit_codes:
                if sig == signal.SIGTERM and code != 0:
                    problems.append("gateway %d exited with %d on SIGTERM"
                                    % (gw.index, code))
        if problems:
            for gw in self.gateways:
                log("---- tail of %s\n%s" % (gw.log_path, tail(gw.log_path)))
        self._remove_tmp()
        return problems

    def _remove_tmp(self):
        if os.environ.get("ACRGW_KEEP_TMP"):
            return
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# The base class of every suite

class GatewayCase(unittest.TestCase):
    GATEWAYS = 1
    OVERRIDES = None

    @classmethod
    def setUpClass(cls):
        cls.env = Env(cls.__name__)
        try:
            cls.env.start(cls.GATEWAYS, cls.OVERRIDES)
        except BaseException:
            cls.env.close()
            raise

    @classmethod
    def tearDownClass(cls):
        problems = cls.env.close()
        if problems:
            raise AssertionError("after the suite:\n  "
                                 + "\n  ".join(problems))

    def setUp(self):
        # A test that stopped Redis or killed a gateway and then failed
        # must not take the following tests down with it.
        if not self.env.redis.is_running():
            self.env.redis.start()
        for gw in self.env.gateways:
            if not gw.is_running():
                gw.start()
        self.env.redis.flushall()
        self.mock.reset()
        for gw in self.env.gateways:
            try:
                self.wait_ready(gw)
            except TimeoutError:
                # Hung after an earlier test (the teardown scan reports
                # why): replace it so this test starts on a working node.
                log("gateway %d not ready; restarting it" % gw.index)
                gw.kill(signal.SIGKILL)
                gw.start()
                self.wait_ready(gw)

    @property
    def mock(self):
        return self.env.mock

    @property
    def redis(self):
        return self.env.redis

    def gw(self, index=0):
        return self.env.gateways[index]

    def request(self, method, path, body=None, headers=None, gw=0,
                timeout=30.0):
        return request(method, path, body, headers,
                       port=self.env.gateways[gw].port, timeout=timeout)

    def post_order(self, body, key=API_KEY_A, headers=None, gw=0,
                   timeout=30.0):
        hdrs = bearer(key) if key is not None else {}
        hdrs.update(headers or {})
        return self.request("POST", "/v1/instances", body, hdrs, gw, timeout)

    def post_until_settled(self, body, gw=0, key=API_KEY_A,
                           timeout=SETTLE_TIMEOUT_S):
        """
        Posts body until the answer is not 409, honouring Retry-After
        (capped at 1 s per wait). Returns (final response, 409s seen).
        """
        deadline = time.monotonic() + timeout
        conflicts = 0
        while True:
            resp = self.post_order(body, key=key, gw=gw)
            if resp.status != 409 or time.monotonic() >= deadline:
                return resp, conflicts
            conflicts += 1
            self.assertProblem(resp, 409, "request_in_progress")
            wait_s = min(1.0, float(resp.headers.get("retry-after", "1")))
            time.sleep(max(0.05, min(wait_s, deadline - time.monotonic())))

    def wait_ready(self, gw, timeout=10.0):
        """
        Waits until gw answers /readyz 200 on every worker. The workers
        share one listening socket and each has its own Redis connection,
        so one 200 speaks for one worker only: ask in bursts of parallel
        requests, which the workers share between them, until a few
        bursts in a row are all 200.
        """
        burst = 2 * max(1, int(gw.config["server"].get("workers", 1)))
        streak = [0]

        def one(_):
            try:
                return request("GET", "/readyz", port=gw.port,
                               timeout=2.0).status
            except OSError:
                return None

        def ready():
            with concurrent.futures.ThreadPoolExecutor(burst) as pool:
                statuses = list(pool.map(one, range(burst)))
            streak[0] = streak[0] + 1 if statuses == [200] * burst else 0
            return streak[0] >= READY_BURSTS

        wait_until(ready, timeout, "gateway %d /readyz 200" % gw.index)

    # Assertions shared by the suites

    def assertProblem(self, resp, status, code):
        """resp is an RFC 9457 problem with that status and code."""
        self.assertEqual(resp.status, status, resp.body)
        ctype = resp.headers.get("content-type", "")
        self.assertTrue(ctype.startswith("application/problem+json"),
                        "content-type %r" % ctype)
        self.assertIsInstance(resp.body, dict, resp.body)
        for field in ("type", "title", "status", "code", "detail",
                      "request_id"):
            self.assertIn(field, resp.body, resp.body)
        self.assertEqual(resp.body["status"], status)
        self.assertEqual(resp.body["code"], code, resp.body)
        self.assertIn("x-request-id", resp.headers)
        self.assertTrue(resp.headers["x-request-id"])

    def assertCreated(self, resp, token=None):
        self.assertEqual(resp.status, 201, resp.body)
        self.assertIsInstance(resp.body, dict, resp.body)
        for field in ("instance_id", "order_id", "client_token",
                      "upstream_request_id"):
            self.assertIn(field, resp.body)
            self.assertIsInstance(resp.body[field], str)
            self.assertTrue(resp.body[field], field)
        if token is not None:
            self.assertEqual(resp.body["client_token"], token)
        self.assertIn("x-request-id", resp.headers)

    def assertReplayed(self, resp):
        self.assertEqual(resp.headers.get("idempotent-replayed", "").lower(),
                         "true", resp.headers)

    def assertNotReplayed(self, resp):
        self.assertNotEqual(
            resp.headers.get("idempotent-replayed", "").lower(), "true")


def main():
    """Runs the suites of the calling file; exits non-zero on failure."""
    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    log("acr-gateway integration: build dir %s" % BUILD_DIR)
    unittest.main(module="__main__", verbosity=2)
