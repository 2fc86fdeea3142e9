/*
 * Who is calling. Pure: reads the config only.
 */
#ifndef ACRGW_AUTH_H
#define ACRGW_AUTH_H

#include "config.h"

/*
 * Parses an Authorization header value ("Bearer <key>", scheme matched
 * case-insensitively), hashes the key with SHA-256 and compares it against
 * every configured hash in constant time. Returns the tenant (borrowed from
 * cfg) or NULL for a missing, malformed or unknown key. The presented key
 * is wiped from every buffer this call made.
 */
const struct config_tenant *auth_tenant(const struct config *cfg,
	    const char *authorization);

#endif
