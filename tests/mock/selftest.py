#!/usr/bin/env python3
"""Checks mock-upstream from the outside, as a gateway would call it.

Starts the mock on kernel-picked ports (with a throwaway certificate when
the openssl command is there), signs calls the vendor's way in Python and
checks the answers, the control API and a clean exit on SIGTERM.

Finds the binary from the first argument, else $MOCK_UPSTREAM, else
$ACRGW_BUILD_DIR/mock-upstream. Prints "N passed, N failed" last and exits
non-zero on any failure.
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

KEY_ID = "selftest-id"
KEY_SECRET = "selftest-secret"
OTHER_KEY_ID = "other-id"
OTHER_KEY_SECRET = "other-secret"
START_TIMEOUT_S = 10
CALL_TIMEOUT_S = 10
DELAY_MS = 800

INSTANCE_ID = re.compile(r"^cri-[0-9a-z]{16}$")
ORDER_ID = re.compile(r"^[0-9]+$")
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-"
                        r"[0-9A-F]{4}-[0-9A-F]{12}$")


class Skip(Exception):
    pass


def encode(text):
    return urllib.parse.quote(text, safe="-_.~")


def timestamp(offset_s=0):
    now = datetime.datetime.now(datetime.timezone.utc)
    moment = now + datetime.timedelta(seconds=offset_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def create_params(token=None, period="12"):
    params = {
        "Action": "CreateInstance",
        "Version": "2017-12-14",
        "Format": "JSON",
        "ProductCode": "acr",
        "SubscriptionType": "Subscription",
        "ProductType": "acr_ee_public_cn",
        "Period": period,
        "RenewalStatus": "ManualRenewal",
        "Parameter.1.Code": "InstanceType",
        "Parameter.1.Value": "Advanced",
        "Parameter.2.Code": "InstanceName",
        "Parameter.2.Value": "selftest-registry",
        "Parameter.3.Code": "Region",
        "Parameter.3.Value": "cn-shanghai",
        "Parameter.4.Code": "DefaultOssBucket",
        "Parameter.4.Value": "true",
    }
    if token is not None:
        params["ClientToken"] = token
    return params


def sign(params, method="POST", key_id=KEY_ID, secret=KEY_SECRET,
         nonce=None, when=None, bad_signature=False):
    """Returns the encoded query with the common parameters and Signature."""
    signed = dict(params)
    signed.update({
        "AccessKeyId": key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "Timestamp": when or timestamp(),
    })
    query = "&".join(encode(k) + "=" + encode(v)
                     for k, v in sorted(signed.items()))
    to_sign = method + "&" + encode("/") + "&" + encode(query)
    digest = hmac.new((secret + "&").encode(), to_sign.encode(),
                      hashlib.sha1).digest()
    signature = base64.b64encode(digest).decode()
    if bad_signature:
        signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    return query + "&Signature=" + encode(signature)


class Mock:
    def __init__(self, binary, workdir, cert=None, key=None):
        self.commit_log = os.path.join(workdir, "commits.jsonl")
        argv = [binary, "--http-port", "0",
                "--access-key", KEY_ID + ":" + KEY_SECRET,
                "--access-key", OTHER_KEY_ID + ":" + OTHER_KEY_SECRET,
                "--commit-log", self.commit_log]
        if cert:
            argv += ["--https-port", "0", "--cert", cert, "--key", key]
        self.stderr = open(os.path.join(workdir, "mock.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.cert = cert
        try:
            line = self._read_line()
            info = json.loads(line)
            assert info["event"] == "listening", line
        except Exception:
            self.kill()
            raise
        self.http_port = info["http_port"]
        self.https_port = info["https_port"]

    def _read_line(self):
        found = []
        reader = threading.Thread(
            target=lambda: found.append(self.proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not found or not found[0]:
            raise RuntimeError("mock did not announce itself")
        return found[0]

    def connection(self, tls=False):
        if tls:
            context = ssl.create_default_context(cafile=self.cert)
            return http.client.HTTPSConnection(
                "127.0.0.1", self.https_port, context=context,
                timeout=CALL_TIMEOUT_S)
        return http.client.HTTPConnection("127.0.0.1", self.http_port,
                                          timeout=CALL_TIMEOUT_S)

    def request(self, method, path, body=None, headers=None, tls=False):
        conn = self.connection(tls)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()

    def call(self, form, tls=False):
        return self.request(
            "POST", "/", body=form, tls=tls,
            headers={"Content-Type": "application/x-www-form-urlencoded"})

    def control(self, method, path, plan=None):
        body = json.dumps(plan) if plan is not None else None
        return self.request(method, "/_mock/" + path, body=body)

    def stats(self):
        return self.control("GET", "stats")[1]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(START_TIMEOUT_S)
        finally:
            self.stderr.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def expect_error(mock, form, status, code):
    got_status, body = mock.call(form)
    assert (got_status, body["Code"]) == (status, code), (got_status, body)
    assert REQUEST_ID.match(body["RequestId"]), body


def case_healthz(mock):
    assert mock.control("GET", "healthz")[0] == 200


def case_success(mock):
    status, body = mock.call(sign(create_params()))
    assert status == 200, body
    assert body["Code"] == "Success" and body["Success"] is True, body
    assert INSTANCE_ID.match(body["Data"]["InstanceId"]), body
    assert ORDER_ID.match(body["Data"]["OrderId"]), body
    assert REQUEST_ID.match(body["RequestId"]), body
    assert mock.stats()["orders"] == 1


def case_replay_returns_same_order(mock):
    first = mock.call(sign(create_params(token="tok-replay")))
    second = mock.call(sign(create_params(token="tok-replay")))
    assert first[0] == second[0] == 200, (first, second)
    assert first[1]["Data"] == second[1]["Data"], (first, second)
    stats = mock.stats()
    assert stats["orders"] == 1, stats
    assert stats["tokens"] == {"tok-replay": 2}, stats


def case_token_is_scoped_to_access_key(mock):
    mine = mock.call(sign(create_params(token="tok-shared")))
    theirs = mock.call(sign(create_params(token="tok-shared"),
                            key_id=OTHER_KEY_ID, secret=OTHER_KEY_SECRET))
    assert mine[1]["Data"] != theirs[1]["Data"], (mine, theirs)
    assert mock.stats()["orders"] == 2


def case_replay_with_other_parameters_is_rejected(mock):
    assert mock.call(sign(create_params(token="tok-mix")))[0] == 200
    expect_error(mock, sign(create_params(token="tok-mix", period="24")),
                 400, "IdempotentParameterMismatch")
    assert mock.stats()["orders"] == 1


def case_no_token_always_creates(mock):
    mock.call(sign(create_params()))
    mock.call(sign(create_params()))
    assert mock.stats()["orders"] == 2


def case_nonce_reuse_is_rejected(mock):
    nonce = uuid.uuid4().hex
    assert mock.call(sign(create_params(), nonce=nonce))[0] == 200
    expect_error(mock, sign(create_params(), nonce=nonce),
                 400, "SignatureNonceUsed")


def case_bad_signature_is_rejected(mock):
    expect_error(mock, sign(create_params(), bad_signature=True),
                 400, "SignatureDoesNotMatch")
    expect_error(mock, sign(create_params(), secret="wrong"),
                 400, "SignatureDoesNotMatch")
    assert mock.stats()["orders"] == 0


def case_signature_covers_the_method(mock):
    form = sign(create_params(), method="GET")
    expect_error(mock, form, 400, "SignatureDoesNotMatch")
    status, body = mock.request("GET", "/?" + sign(create_params(),
                                                   method="GET"))
    assert status == 200, body


def case_stale_timestamp_is_rejected(mock):
    expect_error(mock, sign(create_params(), when=timestamp(-16 * 60)),
                 400, "InvalidTimeStamp.Expired")
    expect_error(mock, sign(create_params(), when=timestamp(16 * 60)),
                 400, "InvalidTimeStamp.Expired")
    expect_error(mock, sign(create_params(), when="2026-02-30T00:00:00Z"),
                 400, "InvalidTimeStamp.Format")
    assert mock.call(sign(create_params(), when=timestamp(-14 * 60)))[0] \
        == 200


def case_unknown_access_key_is_rejected(mock):
    expect_error(mock, sign(create_params(), key_id="nobody"),
                 404, "InvalidAccessKeyId.NotFound")


def case_missing_and_invalid_parameters_are_rejected(mock):
    params = create_params()
    del params["Version"]
    expect_error(mock, sign(params), 400, "MissingParameter")
    params = create_params()
    del params["Parameter.4.Code"]
    del params["Parameter.4.Value"]
    expect_error(mock, sign(params), 400, "MissingParameter")
    params = create_params()
    params["Parameter.6.Code"] = "RepoQuota"
    params["Parameter.6.Value"] = "10"
    expect_error(mock, sign(params), 400, "MissingParameter")
    params = create_params()
    params["Parameter.5.Code"] = "NoSuchCode"
    params["Parameter.5.Value"] = "1"
    expect_error(mock, sign(params), 400, "InvalidParameter")
    params = create_params()
    params["RenewalStatus"] = "AutoRenewal"
    expect_error(mock, sign(params), 400, "MissingParameter")
    params = create_params(period="twelve")
    expect_error(mock, sign(params), 400, "InvalidParameter")
    params = dict(create_params(), Action="DeleteInstance")
    expect_error(mock, sign(params), 400, "InvalidAction.NotFound")
    params = dict(create_params(), Version="2019-01-01")
    expect_error(mock, sign(params), 400, "InvalidVersion")
    assert mock.stats()["orders"] == 0


def case_duplicate_parameter_is_rejected(mock):
    form = sign(create_params())
    expect_error(mock, form + "&Period=12", 400, "InvalidParameter")


def case_stats_record_last_params_without_secrets(mock):
    mock.call(sign(create_params(token="tok-stats")))
    last = mock.stats()["last_params"]
    assert last["ClientToken"] == "tok-stats", last
    assert last["Parameter.2.Value"] == "selftest-registry", last
    for hidden in ("Signature", "SignatureNonce", "Timestamp"):
        assert hidden not in last, last


def form_value(form, name):
    """The decoded value of name in an encoded form."""
    return urllib.parse.parse_qs(form, keep_blank_values=True)[name][0]


def case_stats_record_each_calls_token_nonce_and_signature(mock):
    good = sign(create_params(token="tok-recent"), nonce="nonce-good")
    assert mock.call(good)[0] == 200
    # A planned failure skips the checks; what it carried is still seen.
    plan = {"count": 1, "status": 400, "code": "IdempotentProcessing"}
    assert mock.control("POST", "fail", plan)[0] == 200
    failed = sign(create_params(token="tok-recent"), nonce="nonce-failed")
    expect_error(mock, failed, 400, "IdempotentProcessing")
    expect_error(mock, "Action=CreateInstance", 400, "MissingParameter")

    stats = mock.stats()
    assert stats["recent_dropped"] == 0, stats
    assert stats["recent"] == [
        {"client_token": "tok-recent", "nonce": "nonce-good",
         "signature": form_value(good, "Signature")},
        {"client_token": "tok-recent", "nonce": "nonce-failed",
         "signature": form_value(failed, "Signature")},
        {"client_token": None, "nonce": None, "signature": None},
    ], stats["recent"]
    assert mock.control("POST", "reset")[0] == 200
    assert mock.stats()["recent"] == []


def case_stats_count_accepted_connections_per_listener(mock):
    if not mock.https_port:
        raise Skip("no openssl command for a certificate")
    # Reset and stats each open a connection of their own on plain HTTP.
    assert mock.control("POST", "reset")[0] == 200
    conn = mock.connection(tls=True)
    try:
        for _ in range(3):
            conn.request("POST", "/", body=sign(create_params()), headers={
                "Content-Type": "application/x-www-form-urlencoded"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
    finally:
        conn.close()
    assert mock.call(sign(create_params()), tls=True)[0] == 200
    stats = mock.stats()
    assert stats["calls"] == 4, stats
    assert stats["connections"] == {"http": 1, "https": 2}, stats


def case_fail_plan_status_is_honoured(mock):
    plan = {"count": 2, "status": 503, "code": "ServiceUnavailable"}
    assert mock.control("POST", "fail", plan) == (200, {"ok": True})
    expect_error(mock, sign(create_params(token="tok-503")),
                 503, "ServiceUnavailable")
    expect_error(mock, sign(create_params(token="tok-503")),
                 503, "ServiceUnavailable")
    assert mock.stats()["orders"] == 0
    assert mock.call(sign(create_params(token="tok-503")))[0] == 200
    stats = mock.stats()
    assert stats["orders"] == 1 and stats["calls"] == 3, stats


def case_fail_plan_rejects_unknown_keys(mock):
    status, _ = mock.control("POST", "fail", {"count": 1, "sttaus": 503})
    assert status == 400


def case_delay_plan_is_honoured(mock):
    plan = {"count": 1, "delay_ms": DELAY_MS, "commit": True}
    assert mock.control("POST", "fail", plan)[0] == 200
    answer = []

    def slow_call():
        started = time.monotonic()
        answer.append(mock.call(sign(create_params(token="tok-slow"))))
        answer.append(time.monotonic() - started)

    caller = threading.Thread(target=slow_call)
    caller.start()
    # While the call is held, the order already exists and others are served.
    deadline = time.monotonic() + DELAY_MS / 1000
    while mock.stats()["orders"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert caller.is_alive(), "answer came before the delay"
    assert mock.stats()["orders"] == 1
    caller.join(CALL_TIMEOUT_S)
    (status, body), elapsed_s = answer
    assert status == 200 and body["Code"] == "Success", body
    assert elapsed_s >= DELAY_MS / 1000 * 0.95, elapsed_s


def case_reset_plan_drops_the_connection_after_commit(mock):
    plan = {"reset": True, "commit": True}
    assert mock.control("POST", "fail", plan)[0] == 200
    try:
        status, body = mock.call(sign(create_params(token="tok-reset")))
        raise AssertionError("got an answer: %s %s" % (status, body))
    except (ConnectionError, http.client.HTTPException):
        pass
    assert mock.stats()["orders"] == 1
    status, body = mock.call(sign(create_params(token="tok-reset")))
    assert status == 200, body
    assert mock.stats()["orders"] == 1


def case_https_serves_calls(mock):
    if not mock.https_port:
        raise Skip("no openssl command for a certificate")
    status, body = mock.call(sign(create_params()), tls=True)
    assert status == 200 and body["Code"] == "Success", body
    status, _ = mock.request("GET", "/_mock/healthz", tls=True)
    assert status == 200


def case_commit_log_has_one_line_per_order(mock):
    os.truncate(mock.commit_log, 0)
    mock.call(sign(create_params(token="tok-log")))
    mock.call(sign(create_params(token="tok-log")))
    mock.call(sign(create_params()))
    with open(mock.commit_log) as log:
        lines = [json.loads(line) for line in log]
    assert len(lines) == 2, lines
    assert lines[0]["client_token"] == "tok-log", lines
    assert lines[1]["client_token"] is None, lines


def case_unknown_path_is_404(mock):
    assert mock.request("GET", "/_mock/nothing")[0] == 404
    assert mock.request("POST", "/_mock/stats")[0] == 405


CASES = [
    case_healthz,
    case_success,
    case_replay_returns_same_order,
    case_token_is_scoped_to_access_key,
    case_replay_with_other_parameters_is_rejected,
    case_no_token_always_creates,
    case_nonce_reuse_is_rejected,
    case_bad_signature_is_rejected,
    case_signature_covers_the_method,
    case_stale_timestamp_is_rejected,
    case_unknown_access_key_is_rejected,
    case_missing_and_invalid_parameters_are_rejected,
    case_duplicate_parameter_is_rejected,
    case_stats_record_last_params_without_secrets,
    case_stats_record_each_calls_token_nonce_and_signature,
    case_stats_count_accepted_connections_per_listener,
    case_fail_plan_status_is_honoured,
    case_fail_plan_rejects_unknown_keys,
    case_delay_plan_is_honoured,
    case_reset_plan_drops_the_connection_after_commit,
    case_https_serves_calls,
    case_commit_log_has_one_line_per_order,
    case_unknown_path_is_404,
]


def find_binary():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("MOCK_UPSTREAM"):
        return os.environ["MOCK_UPSTREAM"]
    return os.path.join(os.environ.get("ACRGW_BUILD_DIR", "build"),
                        "mock-upstream")


def make_certificate(workdir):
    if shutil.which("openssl") is None:
        return None, None
    cert = os.path.join(workdir, "cert.pem")
    key = os.path.join(workdir, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True)
    return cert, key


def run_case(mock, case):
    assert mock.control("POST", "reset")[0] == 200
    try:
        case(mock)
    except Skip as why:
        print("skip %s: %s" % (case.__name__, why))
        return "skipped"
    except Exception as error:
        print("FAIL %s: %r" % (case.__name__, error))
        return "failed"
    print("ok   %s" % case.__name__)
    return "passed"


def main():
    binary = find_binary()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    with tempfile.TemporaryDirectory(prefix="mock-selftest-") as workdir:
        cert, key = make_certificate(workdir)
        mock = Mock(binary, workdir, cert, key)
        try:
            for case in CASES:
                counts[run_case(mock, case)] += 1
            code = mock.stop()
            if code == 0:
                print("ok   case_sigterm_exits_cleanly")
                counts["passed"] += 1
            else:
                print("FAIL case_sigterm_exits_cleanly: exit %d" % code)
                counts["failed"] += 1
        finally:
            mock.kill()
            if counts["failed"]:
                with open(os.path.join(workdir, "mock.log")) as log:
                    sys.stderr.write(log.read()[-4000:])
    line = "%d passed, %d failed" % (counts["passed"], counts["failed"])
    if counts["skipped"]:
        line += ", %d skipped" % counts["skipped"]
    print(line)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
