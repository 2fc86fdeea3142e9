#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "errors.h"

static json_t *
parse(char *text)
{
	json_t	*body = json_loads(text, 0, NULL);

	free(text);
	assert_non_null(body);
	return body;
}

static void
problem_body_has_every_member(void **state)
{
	json_t	*body;

	(void)state;
	body = parse(errors_problem_body(&ERR_UNAUTHENTICATED, "req-1", NULL));
	assert_string_equal(json_string_value(json_object_get(body, "type")),
	    "https://acr-gateway.internal/problems/unauthenticated");
	assert_string_equal(json_string_value(json_object_get(body, "code")),
	    "unauthenticated");
	assert_int_equal(json_integer_value(json_object_get(body, "status")),
	    401);
	assert_non_null(json_string_value(json_object_get(body, "title")));
	assert_non_null(json_string_value(json_object_get(body, "detail")));
	assert_string_equal(json_string_value(json_object_get(body,
	    "request_id")), "req-1");
	json_decref(body);
}

static void
problem_body_merges_extra_members(void **state)
{
	json_t	*body, *extra;

	(void)state;
	extra = json_pack("{s:[{s:s, s:s}]}", "errors", "field", "period",
	    "message", "bad");
	body = parse(errors_problem_body(&ERR_INVALID_REQUEST, "r", extra));
	assert_int_equal(json_array_size(json_object_get(body, "errors")), 1);
	assert_int_equal(json_integer_value(json_object_get(body, "status")),
	    400);
	json_decref(body);
}

static void
every_error_has_a_distinct_code_and_client_status(void **state)
{
	const struct api_error	*all[] = {
		&ERR_INVALID_REQUEST, &ERR_DUPLICATE_HEADER, &ERR_BAD_HOST,
		&ERR_UNAUTHENTICATED, &ERR_FORBIDDEN,
		&ERR_NOT_FOUND, &ERR_METHOD_NOT_ALLOWED,
		&ERR_REQUEST_IN_PROGRESS, &ERR_PAYLOAD_TOO_LARGE,
		&ERR_UNSUPPORTED_MEDIA_TYPE, &ERR_IDEMPOTENCY_MISMATCH,
		&ERR_UPSTREAM_REJECTED, &ERR_INTERNAL,
		&ERR_UNSUPPORTED_TRANSFER_ENCODING,
		&ERR_UPSTREAM_UNAVAILABLE, &ERR_UNAVAILABLE,
		&ERR_UPSTREAM_TIMEOUT,
	};
	size_t	n = sizeof(all) / sizeof(all[0]), i, j;

	(void)state;
	for (i = 0; i < n; i++) {
		assert_true(all[i]->status >= 400 && all[i]->status < 600);
		for (j = i + 1; j < n; j++)
			assert_string_not_equal(all[i]->code, all[j]->code);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(problem_body_has_every_member),
		cmocka_unit_test(problem_body_merges_extra_members),
		cmocka_unit_test(every_error_has_a_distinct_code_and_client_status),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
