/*
 * The HTTP server: worker threads, each with its own event_base, evhttp,
 * Redis connections and upstream pool, sharing one listening socket and
 * the immutable config.
 */
#ifndef ACRGW_SERVER_H
#define ACRGW_SERVER_H

struct config;

/*
 * Listens, runs the workers until SIGINT or SIGTERM, drains in-flight
 * requests, and returns the process exit status. cfg is borrowed and must
 * outlive the call.
 */
int	 server_run(const struct config *cfg);

#endif
