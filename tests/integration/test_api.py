"""
Acceptance of the client API ("main job"): one gateway in front of the mock
upstream and a throwaway Redis. Covers creation, replay, mismatch, every
validation rule (one generated test per table row), size, media type and
authentication errors, vendor failures, Redis loss, the parameters sent
upstream and what the gateway logs.

Run alone: ACRGW_BUILD_DIR=build python3 tests/integration/test_api.py
"""

import json
import os
import re
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (API_KEY_A, API_KEY_B, API_KEY_C, DROP,  # noqa: E402
                     GatewayCase, new_token, valid_order, wait_until)

HEX64 = re.compile(r"^[0-9a-f]{64}$")

# A key of the right shape that no tenant holds.
WRONG_KEY = "key-team-z-0123456789"


class Raw:
    """A JSON value written as is, for numbers like 1e1 that json.dumps
    cannot produce from Python values."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return "Raw(%s)" % self.text


def encode(body):
    """A body as the bytes to send: Raw values are spliced in verbatim."""
    if isinstance(body, (bytes, str)):
        return body
    raws = {}

    def mark(value):
        if isinstance(value, Raw):
            name = "@@raw%d@@" % len(raws)
            raws[name] = value.text
            return name
        return value

    text = json.dumps({k: mark(v) for k, v in body.items()})
    for name, raw in raws.items():
        text = text.replace('"%s"' % name, raw)
    return text


def order(**changes):
    return valid_order(**changes)


# ---------------------------------------------------------------------------
# The validation table: one row per case, each its own test method.
#   (name, body, extra headers, fields the errors must name)
# A set with several names means the contract allows either; the first
# reason is recorded in comments beside the row.

HDR = "Idempotency-Key"
TOKEN_FIELDS = {"client_token"}
# Where the token came from a header, naming the header is fine too.
HEADER_TOKEN_FIELDS = {"client_token", "Idempotency-Key", "idempotency-key"}
# Duplicates are found while parsing; naming the key or the body is fine.
DUP_FIELDS = {"", "period"}

BAD_ROWS = [
    # client_token
    ("client_token_is_missing_everywhere", order(client_token=DROP), {},
     TOKEN_FIELDS),
    ("client_token_is_a_number", order(client_token=123), {}, TOKEN_FIELDS),
    ("client_token_is_null", order(client_token=None), {}, TOKEN_FIELDS),
    ("client_token_is_empty", order(client_token=""), {}, TOKEN_FIELDS),
    ("client_token_has_65_characters", order(client_token="a" * 65), {},
     TOKEN_FIELDS),
    ("client_token_has_a_space", order(client_token="tok en"), {},
     TOKEN_FIELDS),
    ("client_token_has_a_control_character", order(client_token="tok\x01"),
     {}, TOKEN_FIELDS),
    ("client_token_is_not_ascii", order(client_token="tok\u00e9n"), {},
     TOKEN_FIELDS),
    # DEL is ASCII but not printable.
    ("client_token_has_a_del_character", order(client_token="tok\x7fen"),
     {}, TOKEN_FIELDS),
    ("header_token_disagrees_with_body_token",
     order(client_token="token-in-body"), {HDR: "token-in-header"},
     HEADER_TOKEN_FIELDS),
    ("header_token_has_a_space", order(client_token=DROP),
     {HDR: "tok en"}, HEADER_TOKEN_FIELDS),
    ("header_token_has_65_characters", order(client_token=DROP),
     {HDR: "h" * 65}, HEADER_TOKEN_FIELDS),
    # An empty header is a bad token, not an absent one, whether or not
    # the body carries a token too.
    ("header_token_is_empty", order(client_token=DROP), {HDR: ""},
     HEADER_TOKEN_FIELDS),
    ("header_token_is_empty_beside_a_body_token", order(), {HDR: ""},
     HEADER_TOKEN_FIELDS),

    # instance_type
    ("instance_type_is_missing", order(instance_type=DROP), {},
     {"instance_type"}),
    ("instance_type_is_a_number", order(instance_type=2), {},
     {"instance_type"}),
    ("instance_type_is_null", order(instance_type=None), {},
     {"instance_type"}),
    ("instance_type_is_lowercase", order(instance_type="standard"), {},
     {"instance_type"}),
    ("instance_type_is_unknown", order(instance_type="Premium"), {},
     {"instance_type"}),
    ("instance_type_is_empty", order(instance_type=""), {},
     {"instance_type"}),

    # instance_name
    ("instance_name_is_missing", order(instance_name=DROP), {},
     {"instance_name"}),
    ("instance_name_is_a_number", order(instance_name=42), {},
     {"instance_name"}),
    ("instance_name_is_null", order(instance_name=None), {},
     {"instance_name"}),
    ("instance_name_has_2_characters", order(instance_name="ab"), {},
     {"instance_name"}),
    ("instance_name_has_31_characters", order(instance_name="a" * 31), {},
     {"instance_name"}),
    ("instance_name_starts_with_hyphen", order(instance_name="-registry"),
     {}, {"instance_name"}),
    ("instance_name_ends_with_hyphen", order(instance_name="registry-"),
     {}, {"instance_name"}),
    ("instance_name_has_uppercase", order(instance_name="Registry"), {},
     {"instance_name"}),
    ("instance_name_has_underscore", order(instance_name="reg_istry"), {},
     {"instance_name"}),
    ("instance_name_is_a_bool", order(instance_name=True), {},
     {"instance_name"}),

    # region
    ("region_is_missing", order(region=DROP), {}, {"region"}),
    ("region_is_a_number", order(region=7), {}, {"region"}),
    ("region_is_null", order(region=None), {}, {"region"}),
    ("region_has_one_part", order(region="shanghai"), {}, {"region"}),
    ("region_ends_with_hyphen", order(region="cn-"), {}, {"region"}),
    ("region_starts_with_hyphen", order(region="-cn"), {}, {"region"}),
    ("region_has_uppercase", order(region="CN-Shanghai"), {}, {"region"}),
    ("region_has_underscore", order(region="cn_shanghai"), {}, {"region"}),
    ("region_has_an_empty_part", order(region="cn--x"), {}, {"region"}),
    ("region_has_33_characters", order(region="cn-" + "a" * 30), {},
     {"region"}),

    # default_oss_bucket
    ("default_oss_bucket_is_missing", order(default_oss_bucket=DROP), {},
     {"default_oss_bucket"}),
    ("default_oss_bucket_is_a_string", order(default_oss_bucket="true"),
     {}, {"default_oss_bucket"}),
    ("default_oss_bucket_is_a_number", order(default_oss_bucket=1), {},
     {"default_oss_bucket"}),
    ("default_oss_bucket_is_null", order(default_oss_bucket=None), {},
     {"default_oss_bucket"}),

    # instance_storage_name and its condition
    ("instance_storage_name_is_missing_with_own_bucket",
     order(default_oss_bucket=False), {}, {"instance_storage_name"}),
    ("instance_storage_name_is_given_with_default_bucket",
     order(default_oss_bucket=True, instance_storage_name="my-bucket"), {},
     {"instance_storage_name"}),
    ("instance_storage_name_is_a_number",
     order(default_oss_bucket=False, instance_storage_name=5), {},
     {"instance_storage_name"}),
    ("instance_storage_name_is_null",
     order(default_oss_bucket=False, instance_storage_name=None), {},
     {"instance_storage_name"}),
    ("instance_storage_name_has_2_characters",
     order(default_oss_bucket=False, instance_storage_name="ab"), {},
     {"instance_storage_name"}),
    ("instance_storage_name_has_64_characters",
     order(default_oss_bucket=False, instance_storage_name="b" * 64), {},
     {"instance_storage_name"}),
    ("instance_storage_name_starts_with_hyphen",
     order(default_oss_bucket=False, instance_storage_name="-bucket"), {},
     {"instance_storage_name"}),
    ("instance_storage_name_ends_with_hyphen",
     order(default_oss_bucket=False, instance_storage_name="bucket-"), {},
     {"instance_storage_name"}),
    ("instance_storage_name_has_uppercase",
     order(default_oss_bucket=False, instance_storage_name="MyBucket"), {},
     {"instance_storage_name"}),
    ("instance_storage_name_has_underscore",
     order(default_oss_bucket=False, instance_storage_name="my_bucket"), {},
     {"instance_storage_name"}),

    # image_scanner
    ("image_scanner_is_lowercase", order(image_scanner="acr"), {},
     {"image_scanner"}),
    ("image_scanner_is_unknown", order(image_scanner="Trivy"), {},
     {"image_scanner"}),
    ("image_scanner_is_a_number", order(image_scanner=1), {},
     {"image_scanner"}),
    ("image_scanner_is_null", order(image_scanner=None), {},
     {"image_scanner"}),
    ("image_scanner_is_empty", order(image_scanner=""), {},
     {"image_scanner"}),

    # period
    ("period_is_missing", order(period=DROP), {}, {"period"}),
    ("period_is_zero", order(period=0), {}, {"period"}),
    ("period_is_10", order(period=10), {}, {"period"}),
    ("period_is_11", order(period=11), {}, {"period"}),
    ("period_is_13", order(period=13), {}, {"period"}),
    ("period_is_72", order(period=72), {}, {"period"}),
    ("period_is_negative", order(period=-12), {}, {"period"}),
    ("period_is_a_string", order(period="12"), {}, {"period"}),
    ("period_is_null", order(period=None), {}, {"period"}),
    ("period_is_a_bool", order(period=True), {}, {"period"}),
    ("period_is_written_12_point_0", order(period=Raw("12.0")), {},
     {"period"}),
    ("period_is_written_1e1", order(period=Raw("1e1")), {}, {"period"}),
    ("period_is_huge", order(period=Raw("123456789012345678901234567890")),
     {}, {"period", ""}),

    # renewal_status and renew_period, and their condition
    ("renewal_status_is_lowercase", order(renewal_status="autorenewal",
                                          renew_period=12), {},
     {"renewal_status"}),
    ("renewal_status_is_unknown", order(renewal_status="Never"), {},
     {"renewal_status"}),
    ("renewal_status_is_a_number", order(renewal_status=1), {},
     {"renewal_status"}),
    ("renewal_status_is_null", order(renewal_status=None), {},
     {"renewal_status"}),
    ("renew_period_is_missing_with_auto_renewal",
     order(renewal_status="AutoRenewal"), {}, {"renew_period"}),
    ("renew_period_is_given_with_manual_renewal",
     order(renewal_status="ManualRenewal", renew_period=12), {},
     {"renew_period"}),
    ("renew_period_is_given_without_renewal_status",
     order(renew_period=12), {}, {"renew_period"}),
    ("renew_period_is_10", order(renewal_status="AutoRenewal",
                                 renew_period=10), {}, {"renew_period"}),
    ("renew_period_is_zero", order(renewal_status="AutoRenewal",
                                   renew_period=0), {}, {"renew_period"}),
    ("renew_period_is_13", order(renewal_status="AutoRenewal",
                                 renew_period=13), {}, {"renew_period"}),
    ("renew_period_is_72", order(renewal_status="AutoRenewal",
                                 renew_period=72), {}, {"renew_period"}),
    ("renew_period_is_negative", order(renewal_status="AutoRenewal",
                                       renew_period=-12), {},
     {"renew_period"}),
    ("renew_period_is_a_string", order(renewal_status="AutoRenewal",
                                       renew_period="12"), {},
     {"renew_period"}),
    ("renew_period_is_null", order(renewal_status="AutoRenewal",
                                   renew_period=None), {}, {"renew_period"}),
    ("renew_period_is_written_12_point_0",
     order(renewal_status="AutoRenewal", renew_period=Raw("12.0")), {},
     {"renew_period"}),

    # the body as a whole
    ("body_has_an_unknown_field", order(colour="blue"), {}, {"colour"}),
    ("body_has_a_field_in_wrong_case", order(Period=12), {}, {"Period"}),
    ("body_has_a_duplicate_key",
     encode(order())[:-1] + ', "period": 12}', {}, DUP_FIELDS),
    ("body_is_an_array", "[]", {}, {""}),
    ("body_is_a_string", '"create please"', {}, {""}),
    ("body_is_a_number", "42", {}, {""}),
    ("body_is_null", "null", {}, {""}),
    ("body_is_empty", "", {}, {""}),
    ("body_is_truncated_json", encode(order())[:-1], {}, {""}),
    ("body_has_trailing_garbage", encode(order()) + " x", {}, {""}),
    ("body_is_two_objects", encode(order()) + encode(order()), {}, {""}),
    ("body_is_not_utf8", b'{"client_token": "\xff\xfe"}', {}, {""}),
]

# The integer fields share their rules: one row per (field, case).
for _field in ("namespace_quota", "repo_quota", "vpc_num"):
    for _case, _value in (("negative", -1), ("above_100000", 100001),
                          ("a_string", "10"), ("a_bool", True),
                          ("null", None), ("a_fraction", 1.5),
                          ("written_12_point_0", Raw("12.0")),
                          ("written_1e1", Raw("1e1"))):
        BAD_ROWS.append(("%s_is_%s" % (_field, _case),
                         order(**{_field: _value}), {}, {_field}))

# Values at the edge of each rule that must be accepted.
GOOD_ROWS = [
    ("token_of_64_characters", order(client_token="k" * 64)),
    ("token_of_1_character", order(client_token="k")),
    ("token_with_punctuation", order(client_token="a/b?c%d#e:f~g!")),
    ("instance_type_basic", order(instance_type="Basic")),
    ("instance_type_advanced", order(instance_type="Advanced")),
    ("instance_name_of_3_characters", order(instance_name="a-1")),
    ("instance_name_of_30_characters", order(instance_name="r" * 30)),
    ("region_of_three_parts", order(region="ap-southeast-1")),
    ("region_of_32_characters", order(region="cn-" + "a" * 29)),
    ("own_bucket_with_3_character_name",
     order(default_oss_bucket=False, instance_storage_name="b-1")),
    ("own_bucket_with_63_character_name",
     order(default_oss_bucket=False, instance_storage_name="b" * 63)),
    ("image_scanner_sas", order(image_scanner="SAS")),
    ("quotas_at_zero", order(namespace_quota=0, repo_quota=0, vpc_num=0)),
    ("quotas_at_100000", order(namespace_quota=100000, repo_quota=100000,
                               vpc_num=100000)),
    ("period_of_1", order(period=1)),
    ("period_of_9", order(period=9)),
    ("period_of_60", order(period=60)),
    ("auto_renewal_with_renew_period_24",
     order(renewal_status="AutoRenewal", renew_period=24)),
    ("manual_renewal_spelled_out", order(renewal_status="ManualRenewal")),
]


def _bad_row_test(body, headers, fields):
    def test(self):
        self.check_rejected(body, headers, fields)
    return test


def _good_row_test(body):
    def test(self):
        resp = self.post_order(encode(body))
        self.assertCreated(resp, body["client_token"])
    return test


class ApiSuite(GatewayCase):
    GATEWAYS = 1

    def check_rejected(self, body, headers, fields):
        """A 400 naming one of fields, nothing stored, nothing sent."""
        resp = self.post_order(encode(body), headers=headers)
        self.assertProblem(resp, 400, "invalid_request")
        errors = resp.body.get("errors")
        self.assertIsInstance(errors, list, resp.body)
        self.assertTrue(errors, resp.body)
        for entry in errors:
            self.assertIsInstance(entry.get("field"), str, entry)
            self.assertIsInstance(entry.get("message"), str, entry)
            self.assertTrue(entry["message"], entry)
        named = {entry["field"] for entry in errors}
        self.assertTrue(named & fields,
                        "errors %r name none of %r" % (errors, fields))
        self.assertEqual(self.redis.keys(), [])
        self.assertEqual(self.mock.calls(), 0)

    # Creation and replay

    def test_valid_request_creates_one_order(self):
        body = order()
        resp = self.post_order(body)
        self.assertCreated(resp, body["client_token"])
        self.assertNotReplayed(resp)
        self.assertTrue(resp.headers.get("content-type", "")
                        .startswith("application/json"))
        self.assertEqual(set(resp.body), {"instance_id", "order_id",
                                          "client_token",
                                          "upstream_request_id"})
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["calls"], 1)

    def test_same_request_again_is_replayed_without_upstream_call(self):
        body = order()
        first = self.post_order(body)
        self.assertCreated(first)
        again = self.post_order(body)
        self.assertEqual(again.status, 201, again.body)
        self.assertReplayed(again)
        self.assertEqual(again.body, first.body)
        self.assertNotEqual(again.headers["x-request-id"],
                            first.headers["x-request-id"])
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["calls"], 1)

    def test_token_in_idempotency_key_header_replays_body_token(self):
        body = order()
        first = self.post_order(body)
        self.assertCreated(first)
        headerless = dict(body)
        token = headerless.pop("client_token")
        again = self.post_order(headerless, headers={"Idempotency-Key": token})
        self.assertEqual(again.status, 201, again.body)
        self.assertReplayed(again)
        self.assertEqual(again.body, first.body)
        self.assertEqual(self.mock.calls(), 1)

    def test_token_in_header_alone_creates_an_order(self):
        body = order()
        token = body.pop("client_token")
        resp = self.post_order(body, headers={"Idempotency-Key": token})
        self.assertCreated(resp, token)
        both = self.post_order(dict(body, client_token=token),
                               headers={"Idempotency-Key": token})
        self.assertEqual(both.status, 201, both.body)
        self.assertReplayed(both)
        self.assertEqual(self.mock.orders(), 1)

    def test_changed_body_under_same_token_is_idempotency_mismatch(self):
        body = order()
        self.assertCreated(self.post_order(body))
        changed = dict(body, instance_name="another-name")
        resp = self.post_order(changed)
        self.assertProblem(resp, 422, "idempotency_mismatch")
        self.assertEqual(self.mock.calls(), 1)

    def test_omitted_default_and_key_order_do_not_make_a_new_request(self):
        body = order()
        self.assertCreated(self.post_order(body))
        text = json.dumps(dict(reversed(list(
            dict(body, renewal_status="ManualRenewal").items()))), indent=3)
        resp = self.post_order(text)
        self.assertEqual(resp.status, 201, resp.body)
        self.assertReplayed(resp)
        self.assertEqual(self.mock.calls(), 1)

    def test_same_token_from_another_tenant_is_a_separate_order(self):
        body = order()
        a = self.post_order(body, key=API_KEY_A)
        b = self.post_order(body, key=API_KEY_B)
        self.assertCreated(a)
        self.assertCreated(b)
        self.assertNotReplayed(b)
        self.assertNotEqual(a.body["instance_id"], b.body["instance_id"])
        self.assertEqual(self.mock.orders(), 2)

    # Validation: one test per row is generated below the class; these
    # cover what a row cannot.

    def test_each_bad_field_gets_its_own_error_entry(self):
        body = order(instance_name="-bad", period=7.5, image_scanner="X",
                     colour=1)
        resp = self.post_order(body)
        self.assertProblem(resp, 400, "invalid_request")
        fields = [e["field"] for e in resp.body["errors"]]
        self.assertEqual(sorted(fields), sorted(["instance_name", "period",
                                                 "image_scanner", "colour"]))

    def test_error_messages_do_not_echo_the_rejected_value(self):
        marker = "zz-echo-marker-zz"
        resp = self.post_order(order(instance_type=marker))
        self.assertProblem(resp, 400, "invalid_request")
        text = json.dumps(resp.body)
        self.assertNotIn(marker, text)

    def test_problem_request_id_matches_the_header(self):
        resp = self.post_order(order(period=0))
        self.assertProblem(resp, 400, "invalid_request")
        self.assertEqual(resp.body["request_id"],
                         resp.headers["x-request-id"])

    # Size, media type and authentication

    def test_body_over_limit_is_413(self):
        body = order(colour="x" * 17000)
        resp = self.post_order(body)
        self.assertProblem(resp, 413, "payload_too_large")
        self.assertEqual(self.redis.keys(), [])
        self.assertEqual(self.mock.calls(), 0)

    def test_body_just_under_limit_is_read_and_validated(self):
        body = order(colour="")
        pad = 16384 - len(encode(body))
        body["colour"] = "x" * pad
        self.assertEqual(len(encode(body)), 16384)
        resp = self.post_order(body)
        self.assertProblem(resp, 400, "invalid_request")
        self.assertIn("colour", [e["field"] for e in resp.body["errors"]])

    def test_text_plain_is_415(self):
        resp = self.post_order(encode(order()),
                               headers={"Content-Type": "text/plain"})
        self.assertProblem(resp, 415, "unsupported_media_type")
        self.assertEqual(self.redis.keys(), [])

    def test_form_encoding_is_415(self):
        resp = self.post_order(
            encode(order()),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertProblem(resp, 415, "unsupported_media_type")

    def test_missing_content_type_is_415(self):
        resp = self.post_order(encode(order()),
                               headers={"Content-Type": None})
        self.assertProblem(resp, 415, "unsupported_media_type")

    def test_json_with_charset_parameter_is_accepted(self):
        body = order()
        resp = self.post_order(
            body, headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertCreated(resp, body["client_token"])

    def test_missing_authorization_is_401(self):
        resp = self.post_order(order(), key=None)
        self.assertProblem(resp, 401, "unauthenticated")
        self.assertEqual(self.redis.keys(), [])
        self.assertEqual(self.mock.calls(), 0)

    def test_unknown_key_is_401(self):
        resp = self.post_order(order(), key=WRONG_KEY)
        self.assertProblem(resp, 401, "unauthenticated")

    def test_key_with_one_character_changed_is_401(self):
        resp = self.post_order(order(), key=API_KEY_A[:-1] + "8")
        self.assertProblem(resp, 401, "unauthenticated")

    def test_basic_scheme_is_401(self):
        resp = self.post_order(order(), key=None, headers={
            "Authorization": "Basic " + API_KEY_A})
        self.assertProblem(resp, 401, "unauthenticated")

    def test_bearer_without_key_is_401(self):
        resp = self.post_order(order(), key=None,
                               headers={"Authorization": "Bearer "})
        self.assertProblem(resp, 401, "unauthenticated")

    def test_401_comes_before_a_bad_body(self):
        resp = self.post_order("{not json", key=WRONG_KEY)
        self.assertProblem(resp, 401, "unauthenticated")
        resp = self.post_order(order(period=0), key=None)
        self.assertProblem(resp, 401, "unauthenticated")

    def test_401_comes_before_a_bad_media_type(self):
        resp = self.post_order(encode(order()), key=None,
                               headers={"Content-Type": "text/plain"})
        self.assertProblem(resp, 401, "unauthenticated")

    def test_bearer_scheme_is_case_insensitive(self):
        for scheme in ("bearer", "BEARER", "BeArEr"):
            body = order()
            resp = self.post_order(body, key=None, headers={
                "Authorization": scheme + " " + API_KEY_A})
            self.assertCreated(resp, body["client_token"])

    # The vendor's failures

    def test_vendor_rejection_is_422_with_vendor_code_and_is_stored(self):
        self.mock.fail(count=1, status=400, code="InvalidParameter")
        body = order()
        resp = self.post_order(body)
        self.assertProblem(resp, 422, "upstream_rejected")
        self.assertEqual(resp.body.get("vendor_code"), "InvalidParameter")
        self.assertIsInstance(resp.body.get("vendor_request_id"), str)
        self.assertTrue(resp.body["vendor_request_id"])
        self.assertEqual(self.mock.calls(), 1)

        again = self.post_order(body)
        self.assertEqual(again.status, 422, again.body)
        self.assertReplayed(again)
        self.assertEqual(again.body, resp.body)
        self.assertEqual(self.mock.calls(), 1)
        self.assertEqual(self.mock.orders(), 0)

    def test_vendor_503_is_502_and_a_retry_succeeds(self):
        self.mock.fail(count=1, status=503, code="ServiceUnavailable")
        body = order()
        resp = self.post_order(body)
        self.assertProblem(resp, 502, "upstream_unavailable")
        self.assertEqual(self.mock.orders(), 0)

        again = self.post_order(body)
        self.assertCreated(again, body["client_token"])
        self.assertNotReplayed(again)
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], 1)
        self.assertEqual(stats["calls"], 2)

    def test_vendor_connection_reset_is_502(self):
        self.mock.fail(count=1, reset=True)
        body = order()
        resp = self.post_order(body)
        self.assertProblem(resp, 502, "upstream_unavailable")
        # The vendor may have acted on a call it never answered, so the
        # gateway may hold the token until the lease ends.
        final, _ = self.post_until_settled(body)
        self.assertCreated(final, body["client_token"])
        self.assertEqual(self.mock.orders(), 1)

    # Redis loss

    def test_redis_down_is_503_without_upstream_call(self):
        self.redis.stop()
        try:
            body = order()
            resp = self.post_order(body)
            self.assertProblem(resp, 503, "unavailable")
            self.assertEqual(self.mock.calls(), 0)
            self.assertEqual(self.request("GET", "/readyz").status, 503)
            self.assertEqual(self.request("GET", "/healthz").status, 200)
        finally:
            self.redis.start()
        self.wait_ready(self.gw())
        resp = self.post_order(body)
        self.assertCreated(resp, body["client_token"])
        self.assertEqual(self.mock.orders(), 1)

    # Health

    def test_healthz_and_readyz_are_200(self):
        for path in ("/healthz", "/readyz"):
            resp = self.request("GET", path)
            self.assertEqual(resp.status, 200, path)
            self.assertIn("x-request-id", resp.headers)

    def test_metrics_count_purchases_and_hold_no_secrets(self):
        def scrape():
            resp = self.request("GET", "/metrics")
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.headers["content-type"].startswith(
                "text/plain"))
            text = resp.body.decode() if isinstance(resp.body, bytes) \
                else resp.body
            values = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    name, value = line.rsplit(" ", 1)
                    values[name] = float(value)
            return text, values

        _, before = scrape()
        body = order()
        self.assertCreated(self.post_order(body))
        self.assertReplayed(self.post_order(body))
        text, after = scrape()

        created = 'acrgw_upstream_calls_total{result="created"}'
        replayed = 'acrgw_idempotency_total{outcome="replayed"}'
        self.assertEqual(after[created] - before[created], 1)
        self.assertEqual(after[replayed] - before[replayed], 1)
        self.assertGreaterEqual(
            after['acrgw_http_requests_total{code="201"}']
            - before['acrgw_http_requests_total{code="201"}'], 2)
        for secret in (API_KEY_A, API_KEY_B, harness.ACCESS_KEY_SECRET,
                       body["client_token"]):
            self.assertNotIn(secret, text)

    def test_unknown_path_is_404_problem(self):
        resp = self.request("GET", "/v1/nothing-here", headers=harness.bearer(
            API_KEY_A))
        self.assertProblem(resp, 404, "not_found")

    # What is sent upstream

    def test_upstream_parameters_follow_the_vendor_page(self):
        body = order(instance_type="Advanced", instance_name="acme-reg",
                     region="cn-hangzhou", default_oss_bucket=False,
                     instance_storage_name="acme-bucket", image_scanner="SAS",
                     namespace_quota=10, repo_quota=1000, vpc_num=3,
                     period=24, renewal_status="AutoRenewal",
                     renew_period=12)
        self.assertCreated(self.post_order(body))
        p = self.mock.stats()["last_params"]
        expect = [("InstanceType", "Advanced"), ("InstanceName", "acme-reg"),
                  ("Region", "cn-hangzhou"), ("DefaultOssBucket", "false"),
                  ("InstanceStorageName", "acme-bucket"),
                  ("image_scanner", "SAS"), ("NamespaceQuota", "10"),
                  ("RepoQuota", "1000"), ("vpc_num", "3")]
        for n, (code, value) in enumerate(expect, 1):
            self.assertEqual(p.get("Parameter.%d.Code" % n), code, p)
            self.assertEqual(p.get("Parameter.%d.Value" % n), value, p)
        self.assertNotIn("Parameter.10.Code", p)
        self.assertEqual(p.get("Action"), "CreateInstance")
        self.assertEqual(p.get("Version"), "2017-12-14")
        self.assertEqual(p.get("ProductCode"), "acr")
        self.assertEqual(p.get("SubscriptionType"), "Subscription")
        self.assertEqual(p.get("ProductType"), "acr_ee_public_cn")
        self.assertEqual(p.get("Period"), "24")
        self.assertEqual(p.get("RenewalStatus"), "AutoRenewal")
        self.assertEqual(p.get("RenewPeriod"), "12")
        self.assertEqual(p.get("AccessKeyId"), harness.ACCESS_KEY_ID)
        self.assertEqual(p.get("SignatureMethod"), "HMAC-SHA1")
        self.assertEqual(p.get("SignatureVersion"), "1.0")
        self.assertRegex(p.get("ClientToken", ""), HEX64)

    def test_upstream_parameters_are_numbered_over_those_present(self):
        body = order(image_scanner="ACR")
        self.assertCreated(self.post_order(body))
        p = self.mock.stats()["last_params"]
        expect = [("InstanceType", "Standard"),
                  ("InstanceName", body["instance_name"]),
                  ("Region", "cn-shanghai"), ("DefaultOssBucket", "true"),
                  ("image_scanner", "ACR")]
        for n, (code, value) in enumerate(expect, 1):
            self.assertEqual(p.get("Parameter.%d.Code" % n), code, p)
            self.assertEqual(p.get("Parameter.%d.Value" % n), value, p)
        self.assertNotIn("Parameter.6.Code", p)
        self.assertNotIn("RenewPeriod", p)
        self.assertIn(p.get("RenewalStatus"), (None, "ManualRenewal"))
        self.assertEqual(p.get("Period"), "12")

    def test_sts_account_sends_its_security_token(self):
        # team-c's account carries an STS token: it travels with the call
        # and is signed with the rest (the mock checks the signature over
        # every parameter, so a 201 shows it was). An account without
        # one sends no SecurityToken at all, not an empty one.
        body = order()
        resp = self.post_order(body, key=API_KEY_C)
        self.assertCreated(resp, body["client_token"])
        p = self.mock.stats()["last_params"]
        self.assertEqual(p.get("SecurityToken"), harness.SECURITY_TOKEN)
        self.assertEqual(p.get("AccessKeyId"), harness.ACCESS_KEY_ID)
        line = self.access_line(resp.headers["x-request-id"])
        self.assertEqual(line.get("tenant"), harness.STS_TENANT, line)

        self.assertCreated(self.post_order(order(), key=API_KEY_A))
        self.assertNotIn("SecurityToken", self.mock.stats()["last_params"])
        self.assertEqual(self.mock.orders(), 2)

    def test_upstream_client_token_differs_per_tenant(self):
        body = order()
        self.assertCreated(self.post_order(body, key=API_KEY_A))
        token_a = self.mock.stats()["last_params"].get("ClientToken", "")
        self.assertCreated(self.post_order(body, key=API_KEY_B))
        token_b = self.mock.stats()["last_params"].get("ClientToken", "")
        self.assertRegex(token_a, HEX64)
        self.assertRegex(token_b, HEX64)
        self.assertNotEqual(token_a, token_b)
        self.assertNotEqual(token_a, body["client_token"])
        tokens = self.mock.stats()["tokens"]
        self.assertEqual(tokens.get(token_a), 1)
        self.assertEqual(tokens.get(token_b), 1)

    # The vendor connection

    def test_purchases_in_turn_reuse_kept_alive_vendor_connections(self):
        # Each worker keeps its vendor connections alive: calls made one
        # after another open at most one connection per worker, not one
        # per call. (Connections left open by earlier tests are not
        # counted after the reset, so fewer than workers is fine.)
        workers = int(self.gw().config["server"]["workers"])
        count = 8
        self.assertGreater(count, workers)
        for _ in range(count):
            body = order()
            self.assertCreated(self.post_order(body), body["client_token"])
        stats = self.mock.stats()
        self.assertEqual(stats["orders"], count)
        self.assertEqual(stats["calls"], count)
        self.assertLessEqual(stats["connections"]["https"], workers,
                             stats["connections"])

    # The record of a request

    def test_request_record_of_own_token_is_completed(self):
        body = order(client_token="rec/with?odd%chars#" + new_token())
        created = self.post_order(body)
        self.assertCreated(created)
        path = "/v1/instances/requests/" + urllib.parse.quote(
            body["client_token"], safe="")
        resp = self.request("GET", path, headers=harness.bearer(API_KEY_A))
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.body["client_token"], body["client_token"])
        self.assertEqual(resp.body["state"], "completed")
        for field in ("created_at", "updated_at"):
            self.assertIn(field, resp.body)
        self.assertEqual(resp.body["result"]["status"], 201)
        self.assertEqual(resp.body["result"]["body"], created.body)

    # Logs

    def access_line(self, req_id, timeout=5.0):
        """The access line of req_id; it may land just after the answer."""
        gw = self.gw()

        def find():
            for obj in gw.access_lines():
                if obj.get("req_id") == req_id:
                    return obj
            return None

        return wait_until(find, timeout, "the access line of %s" % req_id)

    def test_access_lines_carry_tenant_outcome_and_vendor_ids(self):
        # What an operator needs to follow one purchase: who asked, how it
        # ended, how long it took, whether it was a replay, and the ids to
        # quote to the vendor.
        body = order()
        created = self.post_order(body)
        self.assertCreated(created, body["client_token"])
        replay = self.post_order(body)
        self.assertEqual(replay.status, 201, replay.body)
        self.assertReplayed(replay)

        first = self.access_line(created.headers["x-request-id"])
        second = self.access_line(replay.headers["x-request-id"])
        for line in (first, second):
            self.assertEqual(line.get("tenant"), "team-a", line)
            self.assertEqual(line.get("status"), 201, line)
            self.assertEqual(line.get("method"), "POST", line)
            self.assertEqual(line.get("path"), "/v1/instances", line)
            self.assertIs(type(line.get("latency_ms")), int, line)
            self.assertGreaterEqual(line["latency_ms"], 0, line)

        self.assertEqual(first.get("idempotency"), "fresh", first)
        self.assertEqual(first.get("upstream_status"), 200, first)
        self.assertEqual(first.get("upstream_request_id"),
                         created.body["upstream_request_id"], first)

        # The replay made no vendor call: no vendor status of its own, and
        # any vendor id it names is the original's.
        self.assertEqual(second.get("idempotency"), "replayed", second)
        self.assertNotIn("upstream_status", second)
        self.assertIn(second.get("upstream_request_id"),
                      (None, created.body["upstream_request_id"]), second)
        self.assertEqual(self.mock.calls(), 1)

    def test_logs_hold_no_secrets_and_one_access_line_per_request(self):
        sent = []
        for key in (API_KEY_A, API_KEY_B, WRONG_KEY, None):
            resp = self.post_order(order(), key=key)
            sent.append((resp.headers["x-request-id"], resp.status))
        resp = self.post_order(order(period=0))
        sent.append((resp.headers["x-request-id"], resp.status))
        resp = self.request("GET", "/healthz")
        sent.append((resp.headers["x-request-id"], resp.status))
        self.mock.stats()

        gw = self.gw()

        def all_logged():
            lines = {o.get("req_id"): o for o in gw.access_lines()}
            return lines if all(r in lines for r, _ in sent) else None

        lines = wait_until(all_logged, 5.0, "access lines for every request")
        for req_id, status in sent:
            self.assertEqual(lines[req_id].get("status"), status,
                             lines[req_id])
        for req_id, _ in sent:
            count = sum(1 for o in gw.access_lines()
                        if o.get("req_id") == req_id)
            self.assertEqual(count, 1, req_id)

        problems = self.env.scan_logs()
        with open(gw.log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if WRONG_KEY in text:
            problems.append("the rejected key is in the log")
        self.assertEqual(problems, [])
        harness.log("gateway log: %d lines, %d access lines"
                    % (len(gw.log_lines()), len(gw.access_lines())))


for _name, _body, _headers, _fields in BAD_ROWS:
    setattr(ApiSuite, "test_400_when_" + _name,
            _bad_row_test(_body, _headers, _fields))
for _name, _body in GOOD_ROWS:
    setattr(ApiSuite, "test_201_for_" + _name, _good_row_test(_body))


if __name__ == "__main__":
    harness.main()
