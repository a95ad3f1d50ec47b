/*
 * asgi.c - the fields of an ASGI connection scope (the asgiref spec 2.4),
 * made from a request's copied head: HttpRequest._px_asgi_scope() and
 * _px_asks_websocket(), which pyparallel.http._asgi calls for every
 * request.
 *
 * Why in C: an ASGI server makes a scope per request, and going through
 * the request's Python attributes (str objects for the path, the query and
 * every field, then .lower() and .encode() of each) cost more than the
 * rest of serving a small response. Here the bytes the spec asks for are
 * cut from the head at once: a field name lowered in ASCII (names are
 * tokens), a value as received (what encoding its Latin-1 text gives).
 * The keys are interned once per interpreter (pxpy_http_t.asgi_keys).
 */
#include "http/http_binding.h"
#include "http/request.h"

#include <string.h>

enum {
    KEY_TYPE,
    KEY_ASGI,
    KEY_HTTP_VERSION,
    KEY_SCHEME,
    KEY_PATH,
    KEY_RAW_PATH,
    KEY_QUERY_STRING,
    KEY_ROOT_PATH,
    KEY_HEADERS,
    KEY_CLIENT,
    KEY_SERVER,
    KEY_EXTENSIONS,
    KEY_METHOD,
    KEY_COUNT_
};

static const char *const key_names[KEY_COUNT_] = {
    [KEY_TYPE] = "type",
    [KEY_ASGI] = "asgi",
    [KEY_HTTP_VERSION] = "http_version",
    [KEY_SCHEME] = "scheme",
    [KEY_PATH] = "path",
    [KEY_RAW_PATH] = "raw_path",
    [KEY_QUERY_STRING] = "query_string",
    [KEY_ROOT_PATH] = "root_path",
    [KEY_HEADERS] = "headers",
    [KEY_CLIENT] = "client",
    [KEY_SERVER] = "server",
    [KEY_EXTENSIONS] = "extensions",
    [KEY_METHOD] = "method",
};

_Static_assert(KEY_COUNT_ == PXPY_HTTP_ASGI_KEYS,
               "pxpy_http_t.asgi_keys holds every key");

/* A field name, lowered: names are tokens (ASCII), checked by the parser. */
static PyObject *lowered_name(const char *name, uint32_t len)
{
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, len);
    if (bytes == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(bytes);
    for (uint32_t i = 0; i < len; i++) {
        char c = name[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
    }
    return bytes;
}

static PyObject *bytes_of(const char *s, uint32_t len)
{
    return PyBytes_FromStringAndSize(s, len);
}

/* root + the raw path (ASCII, as received) as bytes; root is encoded as
 * Latin-1, which fails as str.encode("latin-1") does. */
static PyObject *raw_path_bytes(const http_request_t *r, PyObject *root)
{
    const char *path = r->path_len ? HEAD(r) + r->path_off : "/";
    Py_ssize_t path_len = r->path_len ? (Py_ssize_t)r->path_len : 1;
    if (PyUnicode_GET_LENGTH(root) == 0)
        return PyBytes_FromStringAndSize(path, path_len);
    PyObject *prefix = PyUnicode_AsLatin1String(root);
    if (prefix == NULL)
        return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(prefix);
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, n + path_len);
    if (bytes != NULL) {
        memcpy(PyBytes_AS_STRING(bytes), PyBytes_AS_STRING(prefix), (size_t)n);
        memcpy(PyBytes_AS_STRING(bytes) + n, path, (size_t)path_len);
    }
    Py_DECREF(prefix);
    return bytes;
}

/* Stores value (a new reference, NULL on failure) under key; -1 on
 * failure. */
static int put(PyObject *scope, PyObject *key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItem(scope, key, value);
    Py_DECREF(value);
    return rc;
}

PyObject *pxpy_http_request_asgi_scope(PyObject *self, PyObject *const *args,
                                       Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "_px_asgi_scope(type, asgi, scheme, root_path, server, "
                     "extensions) takes 6 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *kind = args[0], *root = args[3];
    if (!PyUnicode_Check(kind) || !PyUnicode_Check(root)) {
        PyErr_SetString(PyExc_TypeError,
                        "_px_asgi_scope: the type and root_path are str");
        return NULL;
    }
    pxpy_state *st = pxpy_state_from_object(self);
    if (st == NULL)
        return NULL;
    pxpy_http_t *h = st->http;
    PyObject *const *keys = h->asgi_keys;
    http_request_t *r = (http_request_t *)self;
    bool http11 = r->version == h->versions[1];
    bool rooted = PyUnicode_GET_LENGTH(root) > 0;
    PyObject *path = pxpy_http_request_path(self);
    if (path != NULL && rooted)
        Py_SETREF(path, PyUnicode_Concat(root, path));
    if (path == NULL)
        return NULL;
    PyObject *scope = PyDict_New();
    if (scope == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    const char *query = HEAD(r) + r->query_off;
    if (PyDict_SetItem(scope, keys[KEY_TYPE], kind) < 0 ||
        PyDict_SetItem(scope, keys[KEY_ASGI], args[1]) < 0 ||
        PyDict_SetItem(scope, keys[KEY_HTTP_VERSION],
                       h->asgi_versions[http11 ? 1 : 0]) < 0 ||
        PyDict_SetItem(scope, keys[KEY_SCHEME], args[2]) < 0 ||
        put(scope, keys[KEY_PATH], path) < 0 ||
        put(scope, keys[KEY_RAW_PATH], raw_path_bytes(r, root)) < 0 ||
        put(scope, keys[KEY_QUERY_STRING], bytes_of(query, r->query_len)) < 0 ||
        PyDict_SetItem(scope, keys[KEY_ROOT_PATH], root) < 0 ||
        put(scope, keys[KEY_HEADERS],
            pxpy_http_field_pairs(r, lowered_name, bytes_of)) < 0 ||
        PyDict_SetItem(scope, keys[KEY_CLIENT], r->client) < 0 ||
        PyDict_SetItem(scope, keys[KEY_SERVER], args[4]) < 0 ||
        PyDict_SetItem(scope, keys[KEY_EXTENSIONS], args[5]) < 0 ||
        (PyUnicode_EqualToUTF8(kind, "http") &&
         PyDict_SetItem(scope, keys[KEY_METHOD], r->method) < 0)) {
        Py_DECREF(scope);
        return NULL;
    }
    return scope;
}

/* Whether a str of Latin-1 text, stripped as str.strip() does, is
 * "websocket" in any case (no Latin-1 letter lowers to an ASCII one). */
static bool is_websocket_token(const char *s, uint32_t len)
{
    while (len > 0 && Py_UNICODE_ISSPACE((unsigned char)s[0])) {
        s++;
        len--;
    }
    while (len > 0 && Py_UNICODE_ISSPACE((unsigned char)s[len - 1]))
        len--;
    static const char want[] = "websocket";
    if (len != sizeof(want) - 1)
        return false;
    for (uint32_t i = 0; i < len; i++)
        if ((s[i] >= 'A' && s[i] <= 'Z' ? s[i] | 0x20 : s[i]) != want[i])
            return false;
    return true;
}

PyObject *pxpy_http_request_asks_websocket(PyObject *self,
                                           PyObject *Py_UNUSED(unused))
{
    const http_request_t *r = (const http_request_t *)self;
    const char *head = HEAD(r);
    for (uint32_t i = 0; i < r->num_fields; i++) {
        const field_span_t *f = &FIELDS(r)[i];
        if (f->name_len == 7 &&
            PyOS_strnicmp(head + f->name_off, "upgrade", 7) == 0)
            return PyBool_FromLong(
                is_websocket_token(head + f->value_off, f->value_len));
    }
    Py_RETURN_FALSE;
}

int pxpy_http_asgi_init(pxpy_http_t *h)
{
    for (int i = 0; i < KEY_COUNT_; i++)
        if ((h->asgi_keys[i] = PyUnicode_InternFromString(key_names[i])) ==
            NULL)
            return -1;
    if ((h->asgi_versions[0] = PyUnicode_InternFromString("1.0")) == NULL ||
        (h->asgi_versions[1] = PyUnicode_InternFromString("1.1")) == NULL)
        return -1;
    return 0;
}

void pxpy_http_asgi_free(pxpy_http_t *h)
{
    for (int i = 0; i < KEY_COUNT_; i++)
        Py_CLEAR(h->asgi_keys[i]);
    Py_CLEAR(h->asgi_versions[0]);
    Py_CLEAR(h->asgi_versions[1]);
}
