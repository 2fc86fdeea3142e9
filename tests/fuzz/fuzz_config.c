/*
 * libFuzzer target: config_parse on the input, then config_free. A config
 * that parses must be whole (every reference resolved, every rule across
 * keys kept); one that does not must say why, one clean line per error.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

int	 LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_config(const struct config *cfg)
{
	size_t	 i;

	if (cfg->naccounts < 1 || cfg->ntenants < 1 || cfg->napi_keys < 1)
		abort();
	for (i = 0; i < cfg->naccounts; i++) {
		if (cfg->accounts[i].name == NULL ||
		    cfg->accounts[i].creds == NULL)
			abort();
	}
	for (i = 0; i < cfg->ntenants; i++) {
		if (cfg->tenants[i].account == NULL ||
		    config_tenant(cfg, cfg->tenants[i].name) == NULL)
			abort();
	}
	for (i = 0; i < cfg->napi_keys; i++) {
		if (cfg->api_keys[i].tenant == NULL)
			abort();
	}

	if (cfg->upstream_url == NULL || cfg->upstream_host == NULL ||
	    cfg->upstream_host[0] == '\0')
		abort();
	if (cfg->upstream_port < 1 || cfg->upstream_port > 65535)
		abort();
	if (!cfg->upstream_is_https && !cfg->upstream_allow_plain_http)
		abort();
	if (cfg->idem_lease_ms <= cfg->upstream_timeout_ms)
		abort();
	if (cfg->listen_address == NULL || cfg->redis_host == NULL ||
	    cfg->redis_key_prefix == NULL)
		abort();
}

/*
 * Errors are "path: message" lines. A control byte inside one could split
 * or forge a line in the operator's terminal or log.
 */
static void
check_errors(const char *errs)
{
	size_t	 i, len;

	if (errs == NULL || (len = strlen(errs)) == 0 || errs[len - 1] != '\n')
		abort();
	for (i = 0; i < len; i++) {
		if (errs[i] == '\n')
			continue;
		if ((unsigned char)errs[i] < ' ' || errs[i] == 0x7f)
			abort();
	}
}

/*
 * Whether any key, or any string other than the secret's own value,
 * contains the secret: an error may rightly quote such text.
 */
static bool
spelled_elsewhere(json_t *node, const json_t *own, const char *secret)
{
	const char	*key;
	json_t		*child;
	size_t		 i;

	if (json_is_string(node))
		return node != own &&
		    strstr(json_string_value(node), secret) != NULL;
	json_array_foreach(node, i, child) {
		if (spelled_elsewhere(child, own, secret))
			return true;
	}
	json_object_foreach(node, key, child) {
		if (strstr(key, secret) != NULL ||
		    spelled_elsewhere(child, own, secret))
			return true;
	}
	return false;
}

/*
 * No error quotes a secret. Only secrets with a byte no error text uses
 * are looked for, so a secret that happens to spell a message's words or
 * a key's name is not taken for a leak; nor is one that the input also
 * spells outside its own value (inside an unknown key's name, say).
 */
static void
check_no_secret(const char *text, size_t size, const char *errs)
{
	static const char *const secret_keys[] = {
		"access_key_secret", "security_token",
	};
	const char	*name, *secret;
	json_t		*root, *account;
	size_t		 i;

	root = json_loadb(text, size, JSON_REJECT_DUPLICATES, NULL);
	json_object_foreach(json_object_get(root, "accounts"), name,
	    account) {
		for (i = 0; i < NELEM(secret_keys); i++) {
			secret = json_string_value(json_object_get(account,
			    secret_keys[i]));
			if (secret == NULL || strlen(secret) < 6 ||
			    strpbrk(secret, "#$%&*;<=>?@^`{|}~!") == NULL)
				continue;
			if (spelled_elsewhere(root, json_object_get(account,
			    secret_keys[i]), secret))
				continue;
			if (strstr(errs, secret) != NULL)
				abort();
		}
	}
	json_decref(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	*cfg;
	char		*text, *errs = (char *)1;

	/* Exact size and no NUL after it, so ASan sees any overread. */
	if ((text = malloc(size > 0 ? size : 1)) == NULL)
		abort();
	memcpy(text, data, size);

	cfg = config_parse(text, size, "fuzz.json", &errs);
	if (cfg != NULL) {
		if (errs != NULL)
			abort();
		check_config(cfg);
	} else {
		check_errors(errs);
		check_no_secret(text, size, errs);
	}
	free(text);
	config_free(cfg);
	free(errs);
	return 0;
}
