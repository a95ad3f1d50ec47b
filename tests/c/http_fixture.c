/*
 * http_fixture.c - the HTTP server tests' set-up and tear-down (see
 * http_fixture.h).
 */
#include "http_fixture.h"

void http_fixture_serve(http_fixture_t *f, int backend,
                        const px_http_server_options_t *opts)
{
    f->client.fd = -1;
    f->client.buf = NULL;
    f->loop = start_loop(backend, NULL);
    ASSERT_PX_OK(px_http_server_new(f->loop, opts, &f->server));
    ASSERT_PX_OK(px_http_listen(f->server, "127.0.0.1", 0, 128, &f->listener));
    f->port = px_listener_port(f->listener);
    ASSERT_INT_CMP(f->port, >, 0);
}

http_client_t *http_fixture_start(http_fixture_t *f, int backend,
                                  const px_http_server_options_t *opts)
{
    http_fixture_serve(f, backend, opts);
    http_client_open(&f->client, f->port);
    return &f->client;
}

void http_fixture_stop(http_fixture_t *f)
{
    if (f->client.fd >= 0)
        http_client_close(&f->client);
    px_listener_close(f->listener);
    ASSERT_PX_OK(px_loop_stop(f->loop));
    px_http_server_free(f->server);
    px_loop_free(f->loop);
}
