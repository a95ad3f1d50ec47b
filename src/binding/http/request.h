/*
 * request.h - the layout of an HttpRequest (types.c), for the files that
 * read a request's head directly: types.c, which makes requests and their
 * attributes, and asgi.c, which makes an ASGI scope from one without going
 * through those attributes.
 */
#ifndef PXPY_HTTP_REQUEST_H
#define PXPY_HTTP_REQUEST_H

#include "http/http_binding.h"

#include <stdint.h>

/* Where a field's name and value are in the copied head. */
typedef struct {
    uint32_t name_off, name_len, value_off, value_len;
} field_span_t;

typedef struct {
    PyObject_VAR_HEAD
    PyObject *method;
    PyObject *version;
    PyObject *client;
    PyObject *scheme;      /* "http", or "https" from a trusted proxy */
    PyObject *body;        /* NULL while a streamed body is not read whole */
    PyObject *body_source; /* the HttpBody of a streamed body */
    int body_state;        /* see take_body */
    PyObject *keep_alive;
    /* Made on first access. */
    PyObject *target;
    PyObject *raw_path;
    PyObject *path; /* percent-decoded, when raw_path has escapes */
    PyObject *query_string;
    PyObject *fields;
    /* Kept for the Python subclass (_query, _headers). */
    PyObject *query_cache;
    PyObject *headers_cache;
    uint32_t target_off, target_len;
    uint32_t path_off, path_len; /* path_len 0: the path is "/" */
    uint32_t query_off, query_len;
    uint32_t num_fields;
    uint32_t head_len;
    /* num_fields field_span_t, then the head's head_len bytes. */
    _Alignas(field_span_t) char data[];
} http_request_t;

#define FIELDS(r) ((field_span_t *)(r)->data)
#define HEAD(r) ((r)->data + (r)->num_fields * sizeof(field_span_t))

/* The request's header fields as a list of (name, value) pairs, in order,
 * each made by its function from the bytes of the head. */
typedef PyObject *(*pxpy_http_span_fn)(const char *s, uint32_t len);
PyObject *pxpy_http_field_pairs(const http_request_t *r,
                                pxpy_http_span_fn name_of,
                                pxpy_http_span_fn value_of);

#endif
