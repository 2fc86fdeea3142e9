#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util.h"

static void
hex_encodes_lowercase_two_digits_per_byte(void **state)
{
	const unsigned char	bytes[] = { 0x00, 0x0f, 0xa5, 0xff };
	char			out[9];

	(void)state;
	util_hex(bytes, sizeof(bytes), out);
	assert_string_equal(out, "000fa5ff");
}

static void
equal_ct_tells_equal_from_different(void **state)
{
	(void)state;
	assert_true(util_equal_ct("abcdef", "abcdef", 6));
	assert_false(util_equal_ct("abcdef", "abcdeg", 6));
	assert_false(util_equal_ct("xbcdef", "abcdef", 6));
}

static void
xasprintf_formats_into_a_new_string(void **state)
{
	char	*s;

	(void)state;
	s = xasprintf("%s-%d", "tenant", 42);
	assert_string_equal(s, "tenant-42");
	free(s);
}

static void
xstrndup_stops_at_length(void **state)
{
	char	*s;

	(void)state;
	s = xstrndup("abcdef", 3);
	assert_string_equal(s, "abc");
	free(s);
}

static void
secret_free_accepts_null_and_secrets(void **state)
{
	(void)state;
	secret_free(NULL);
	secret_free(xstrdup("not-a-real-secret"));
	assert_true(1 == 1);
}

static void
monotonic_clock_never_goes_back(void **state)
{
	int64_t	a, b;

	(void)state;
	a = util_mono_ms();
	b = util_mono_ms();
	assert_true(b >= a);
	/* The wall clock is past 2020-01-01 on any machine that runs this. */
	assert_true(util_now_ms() > INT64_C(1577836800000));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(hex_encodes_lowercase_two_digits_per_byte),
		cmocka_unit_test(equal_ct_tells_equal_from_different),
		cmocka_unit_test(xasprintf_formats_into_a_new_string),
		cmocka_unit_test(xstrndup_stops_at_length),
		cmocka_unit_test(secret_free_accepts_null_and_secrets),
		cmocka_unit_test(monotonic_clock_never_goes_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
