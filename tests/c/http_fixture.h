/*
 * http_fixture.h - the set-up every HTTP server test over sockets starts
 * from, and its tear-down: a started loop on a chosen backend, an HTTP
 * server listening on 127.0.0.1 (an ephemeral port), and a client connected
 * to it.
 *
 * Lifecycle: http_fixture_start (or http_fixture_serve, for a test that
 * opens its clients itself) skips the test when the backend is io_uring and
 * it is unavailable; the test may close the client, or open it again, on
 * the way; http_fixture_stop closes the client if it is open, then the
 * listener, stops the loop and frees the server and the loop.
 */
#ifndef PX_TEST_HTTP_FIXTURE_H
#define PX_TEST_HTTP_FIXTURE_H

#include "http_client.h"
#include "px_http_server.h"

typedef struct {
    px_loop_t *loop;
    px_http_server_t *server;
    px_listener_t *listener;
    int port;
    http_client_t client; /* fd -1 while not connected */
} http_fixture_t;

/* The loop, the server with opts and its listener; no client. */
void http_fixture_serve(http_fixture_t *f, int backend,
                        const px_http_server_options_t *opts);
/* http_fixture_serve, then the client connected; returns the client. */
http_client_t *http_fixture_start(http_fixture_t *f, int backend,
                                  const px_http_server_options_t *opts);
void http_fixture_stop(http_fixture_t *f);

#endif /* PX_TEST_HTTP_FIXTURE_H */
