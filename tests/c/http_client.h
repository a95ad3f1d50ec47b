/*
 * http_client.h - the HTTP server tests' raw-socket HTTP/1.1 client: it
 * reads responses byte-exactly (status, head, Content-Length body), so a
 * test sees exactly what went over the wire.
 */
#ifndef PX_TEST_HTTP_CLIENT_H
#define PX_TEST_HTTP_CLIENT_H

#include "engine_util.h"

#include <stdbool.h>

/* A connection with a buffer of received, unread bytes. */
typedef struct {
    int fd; /* -1 once closed */
    char *buf;
    size_t len, cap;
} http_client_t;

typedef struct {
    int status;
    char *head; /* NUL-terminated, status line through blank line */
    size_t head_len;
    char *body; /* NUL-terminated too */
    size_t body_len;
} http_response_t;

void http_client_open(http_client_t *c, int port);
void http_client_close(http_client_t *c);
void http_client_send(http_client_t *c, const void *data, size_t len);
void http_client_send_str(http_client_t *c, const char *text);
/* Reads the next response: its head, then Content-Length body bytes
 * (none when head_only: the request was HEAD). Fails on EOF or timeout. */
void http_read_response(http_client_t *c, http_response_t *r, bool head_only);
void http_response_free(http_response_t *r);
/* The value of the first field named name (any case), copied; false when
 * absent. */
bool http_header(const http_response_t *r, const char *name, char *value,
                 size_t cap);
/* How many fields are named name. */
int http_header_count(const http_response_t *r, const char *name);
/* Fails unless the response's Connection field is value (NULL: absent). */
void http_expect_connection(const http_response_t *r, const char *value);
/* Fails unless the server closes within ms with no further bytes. */
void http_expect_eof(http_client_t *c, int ms);
/* Fails if anything (bytes or EOF) arrives within ms. */
void http_expect_silence(http_client_t *c, int ms);

/* Reads one response and checks its status and body. */
void http_expect(http_client_t *c, int status, const char *body);

/* Sends piece every every_ms milliseconds until the server answers, then
 * reads the answer; fails when none came within 5 s (a client trickling
 * a request until it times out). */
void http_trickle_until_answer(http_client_t *c, const char *piece,
                               int every_ms, http_response_t *r);

#endif /* PX_TEST_HTTP_CLIENT_H */
