/*
 * libFuzzer target: auth_tenant on the input as an Authorization value,
 * against a small config parsed once. A second, plainer reading of the
 * header rule below must agree with it on every input.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "auth.h"
#include "config.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))
#define TOKEN_MAX	512

/*
 * The keys the config below holds, each its tenant's. The hashes are
 * `printf %s KEY | sha256sum`; beta's is written in uppercase, which the
 * config also accepts.
 */
static const struct {
	const char	*key;
	const char	*tenant;
} known[] = {
	{ "fuzz-key-alpha-0123456789abcdefghijklmnopqrstu", "alpha" },
	{ "fuzz+key/beta==", "beta" },
};

static const char config_text[] =
	"{\"upstream\": {\"url\": \"https://business.aliyuncs.com\"},"
	" \"accounts\": {\"main\": {\"site\": \"cn\","
	" \"access_key_id\": \"LTAI5tFuzz\","
	" \"access_key_secret\": \"fuzz-secret\"}},"
	" \"tenants\": {\"alpha\": {\"account\": \"main\"},"
	" \"beta\": {\"account\": \"main\"},"
	" \"gamma\": {\"account\": \"main\"}},"
	" \"api_keys\": ["
	" {\"tenant\": \"alpha\", \"sha256\":"
	" \"63e28b9214a00ca97c593032ee79a7e3587c30393cc85406abf6c580ef9a90ef\"},"
	" {\"tenant\": \"beta\", \"sha256\":"
	" \"73802FEDFA925C6FAA45F4D350F7C3C470B935804C45FD24819E4777282E244A\"}"
	"]}";

static struct config *cfg;

int	 LLVMFuzzerInitialize(int *argc, char ***argv);
int	 LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
is_token68_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	    c == '~' || c == '+' || c == '/';
}

/*
 * The tenant name the header should yield, or NULL: "Bearer" in any case,
 * one or more spaces, then 1-512 token68 bytes ending the string, '='
 * allowed only as trailing padding; and the token one of the known keys.
 */
static const char *
expected_tenant(const char *header)
{
	const char	*token;
	size_t		 i, n;

	if (strncasecmp(header, "bearer", 6) != 0 || header[6] != ' ')
		return NULL;
	token = header + 6;
	while (*token == ' ')
		token++;

	for (n = 0; is_token68_char(token[n]); n++)
		;
	while (token[n] == '=')
		n++;
	if (n == 0 || n > TOKEN_MAX || token[n] != '\0')
		return NULL;

	for (i = 0; i < NELEM(known); i++) {
		if (strcmp(token, known[i].key) == 0)
			return known[i].tenant;
	}
	return NULL;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char	*errs = NULL;
	char	 header[128];
	size_t	 i;

	(void)argc;
	(void)argv;
	json_object_seed(1);
	cfg = config_parse(config_text, strlen(config_text), "fuzz-auth",
	    &errs);
	if (cfg == NULL)
		abort();

	/* The harness itself is sound: each known key finds its tenant. */
	for (i = 0; i < NELEM(known); i++) {
		strcpy(header, "Bearer ");
		strcat(header, known[i].key);
		if (auth_tenant(cfg, header) != config_tenant(cfg,
		    known[i].tenant))
			abort();
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct config_tenant *got, *want = NULL;
	const char	*name;
	char		*header;

	/* A header value is a C string on the request path too. */
	if ((header = malloc(size + 1)) == NULL)
		abort();
	memcpy(header, data, size);
	header[size] = '\0';

	got = auth_tenant(cfg, header);
	if ((name = expected_tenant(header)) != NULL)
		want = config_tenant(cfg, name);
	if (got != want)
		abort();

	free(header);
	return 0;
}
