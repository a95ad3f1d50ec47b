/*
 * test_http_static.c - static files: px_http_file_plan's decisions, table
 * driven (conditionals, ranges, HTTP-date formats), then a real file served
 * over a socket with px_http_respond_file (whole, ranges, 304, 416, HEAD)
 * under both backends.
 */
#include "http_fixture.h"

#include <fcntl.h>
#include <sys/stat.h>

/* ---- plans -------------------------------------------------------------- */

/* A file of 1000 bytes, modified at Sun, 06 Nov 1994 08:49:37 GMT. */
#define MTIME 784111777
#define LAST_MODIFIED "Sun, 06 Nov 1994 08:49:37 GMT"

static struct stat fake_stat(void)
{
    struct stat st = {0};
    st.st_size = 1000;
    st.st_mtim.tv_sec = MTIME;
    st.st_mtim.tv_nsec = 5;
    st.st_ino = 42;
    return st;
}

typedef struct {
    const char *fields; /* header lines after the request line */
    const char *method;
    int status_in;
    int status;
    uint64_t offset, length;
    const char *content_range; /* NULL: none expected */
} plan_case_t;

static void plan_for(const char *method, const char *fields, int status,
                     px_http_file_plan_t *plan)
{
    char text[1024];
    snprintf(text, sizeof(text), "%s /f HTTP/1.1\r\nHost: t\r\n%s\r\n", method,
             fields);
    static px_http_header_t headers[32];
    px_http_server_request_t req = {0};
    ssize_t rc = px_http_parse_request(text, strlen(text), 0, NULL, &req.head,
                                       headers, 32);
    if (rc != (ssize_t)strlen(text))
        TEST_FAIL("request did not parse (%zd): %s", rc, text);
    struct stat st = fake_stat();
    px_http_file_plan(&req, &st, status, plan);
}

static const char *field(const px_http_file_plan_t *plan, const char *name)
{
    for (size_t i = 0; i < plan->num_headers; i++)
        if (strcmp(plan->headers[i].name, name) == 0)
            return plan->headers[i].value;
    return NULL;
}

#define ETAG "\"3e8-ae1b981bc490a05-2a\""

static void test_plans(int arg)
{
    (void)arg;
    static const plan_case_t cases[] = {
        {"", "GET", 200, 200, 0, 1000, NULL},
        {"", "HEAD", 200, 200, 0, 1000, NULL},
        {"If-None-Match: " ETAG "\r\n", "GET", 200, 304, 0, 0, NULL},
        {"If-None-Match: \"x\", W/" ETAG "\r\n", "GET", 200, 304, 0, 0, NULL},
        {"If-None-Match: \"x\"\r\nIf-None-Match: *\r\n", "HEAD", 200, 304, 0, 0,
         NULL},
        {"If-None-Match: \"other\"\r\n", "GET", 200, 200, 0, 1000, NULL},
        {"If-None-Match: " ETAG "\r\n", "POST", 200, 412, 0, 0, NULL},
        {"If-None-Match: " ETAG "\r\n", "GET", 404, 404, 0, 1000, NULL},
        /* If-None-Match wins over If-Modified-Since */
        {"If-None-Match: \"x\"\r\nIf-Modified-Since: " LAST_MODIFIED "\r\n",
         "GET", 200, 200, 0, 1000, NULL},
        {"If-Modified-Since: " LAST_MODIFIED "\r\n", "GET", 200, 304, 0, 0,
         NULL},
        {"If-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT\r\n", "GET", 200,
         304, 0, 0, NULL},
        {"If-Modified-Since: Sun Nov  6 08:49:37 1994\r\n", "GET", 200, 304, 0,
         0, NULL},
        {"If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT\r\n", "GET", 200,
         200, 0, 1000, NULL},
        {"If-Modified-Since: yesterday\r\n", "GET", 200, 200, 0, 1000, NULL},
        {"If-Modified-Since: " LAST_MODIFIED "\r\n", "POST", 200, 200, 0, 1000,
         NULL},
        {"Range: bytes=10-19\r\n", "GET", 200, 206, 10, 10, "bytes 10-19/1000"},
        {"Range: bytes=990-\r\n", "GET", 200, 206, 990, 10,
         "bytes 990-999/1000"},
        {"Range: bytes=995-5000\r\n", "GET", 200, 206, 995, 5,
         "bytes 995-999/1000"},
        {"Range: bytes=-5\r\n", "GET", 200, 206, 995, 5, "bytes 995-999/1000"},
        {"Range: bytes=-5000\r\n", "GET", 200, 206, 0, 1000,
         "bytes 0-999/1000"},
        {"Range: BYTES = 0-0 ,\r\n", "GET", 200, 200, 0, 1000, NULL},
        {"Range: bytes= 0-0 ,\r\n", "GET", 200, 206, 0, 1, "bytes 0-0/1000"},
        {"Range: bytes=1000-\r\n", "GET", 200, 416, 0, 0, "bytes */1000"},
        {"Range: bytes=-0\r\n", "GET", 200, 416, 0, 0, "bytes */1000"},
        {"Range: bytes=0-1,5-6\r\n", "GET", 200, 200, 0, 1000, NULL},
        {"Range: bytes=5-1\r\n", "GET", 200, 200, 0, 1000, NULL},
        {"Range: bytes=x-1\r\n", "GET", 200, 200, 0, 1000, NULL},
        {"Range: lines=1-2\r\n", "GET", 200, 200, 0, 1000, NULL},
        {"Range: bytes=99999999999999999999-\r\n", "GET", 200, 200, 0, 1000,
         NULL},
        {"Range: bytes=0-9\r\n", "HEAD", 200, 200, 0, 1000, NULL},
        {"Range: bytes=0-9\r\n", "GET", 404, 404, 0, 1000, NULL},
        {"Range: bytes=0-9\r\nIf-Range: " ETAG "\r\n", "GET", 200, 206, 0, 10,
         "bytes 0-9/1000"},
        {"Range: bytes=0-9\r\nIf-Range: W/" ETAG "\r\n", "GET", 200, 200, 0,
         1000, NULL},
        {"Range: bytes=0-9\r\nIf-Range: \"old\"\r\n", "GET", 200, 200, 0, 1000,
         NULL},
        {"Range: bytes=0-9\r\nIf-Range: " LAST_MODIFIED "\r\n", "GET", 200, 206,
         0, 10, "bytes 0-9/1000"},
        {"Range: bytes=0-9\r\nIf-Range: Mon, 07 Nov 1994 08:49:37 GMT\r\n",
         "GET", 200, 200, 0, 1000, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const plan_case_t *c = &cases[i];
        px_http_file_plan_t plan;
        plan_for(c->method, c->fields, c->status_in, &plan);
        if (plan.status != c->status || (uint64_t)plan.offset != c->offset ||
            plan.length != c->length)
            TEST_FAIL("case %zu (%s %s): status %d offset %jd length %ju, "
                      "expected %d %ju %ju",
                      i, c->method, c->fields, plan.status,
                      (intmax_t)plan.offset, (uintmax_t)plan.length, c->status,
                      (uintmax_t)c->offset, (uintmax_t)c->length);
        const char *range = field(&plan, "Content-Range");
        if ((range == NULL) != (c->content_range == NULL) ||
            (range != NULL && strcmp(range, c->content_range) != 0))
            TEST_FAIL("case %zu: Content-Range %s, expected %s", i,
                      range ? range : "(none)",
                      c->content_range ? c->content_range : "(none)");
        ASSERT_STR_EQ(field(&plan, "ETag"), ETAG);
        ASSERT_STR_EQ(field(&plan, "Last-Modified"), LAST_MODIFIED);
        bool ranges_ok = (c->status == 200 &&
                          (c->method[0] == 'G' || c->method[0] == 'H')) ||
                         c->status == 206 || c->status == 416;
        ASSERT_INT_EQ(field(&plan, "Accept-Ranges") != NULL,
                      ranges_ok && range == NULL && c->status_in == 200);
    }
}

static void test_empty_file_plan(int arg)
{
    (void)arg;
    px_http_file_plan_t plan;
    char text[] = "GET /f HTTP/1.1\r\nHost: t\r\nRange: bytes=0-\r\n\r\n";
    px_http_header_t headers[8];
    px_http_server_request_t req = {0};
    ASSERT_INT_EQ(px_http_parse_request(text, strlen(text), 0, NULL, &req.head,
                                        headers, 8),
                  (ssize_t)strlen(text));
    struct stat st = {0};
    px_http_file_plan(&req, &st, 200, &plan);
    ASSERT_INT_EQ(plan.status, 416);
    ASSERT_STR_EQ(plan.content_range, "bytes */0");
}

/* ---- a file over a socket ----------------------------------------------- */

#define FILE_SIZE 300000

static int file_fd = -1;

static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    struct stat st;
    ASSERT_INT_EQ(fstat(file_fd, &st), 0);
    px_http_file_plan_t plan;
    px_http_file_plan(req, &st, 200, &plan);
    px_http_header_t fields[5];
    fields[0] =
        (px_http_header_t){"Content-Type", 12, "application/octet-stream", 24};
    memcpy(fields + 1, plan.headers, plan.num_headers * sizeof(fields[0]));
    ASSERT_PX_OK(px_http_respond_file(ex, plan.status, fields,
                                      plan.num_headers + 1, file_fd,
                                      plan.offset, plan.length));
}

static void make_file(void)
{
    char path[] = "/tmp/px-http-static-XXXXXX";
    file_fd = mkstemp(path);
    ASSERT_INT_CMP(file_fd, >=, 0);
    unlink(path);
    static char data[FILE_SIZE];
    fill_pattern(data, FILE_SIZE, 0, 11);
    ASSERT_INT_EQ(write(file_fd, data, FILE_SIZE), FILE_SIZE);
}

/* A server of a fresh file, and its client. */
static http_client_t *open_file_server(http_fixture_t *f, int backend)
{
    make_file();
    px_http_server_options_t opts = {.on_request = on_request};
    return http_fixture_start(f, backend, &opts);
}

static void close_file_server(http_fixture_t *f)
{
    http_fixture_stop(f);
    close(file_fd);
}

static void get(http_client_t *c, const char *method, const char *fields,
                http_response_t *r)
{
    char request[512];
    snprintf(request, sizeof(request), "%s /file HTTP/1.1\r\nHost: t\r\n%s\r\n",
             method, fields);
    http_client_send_str(c, request);
    http_read_response(c, r, strcmp(method, "HEAD") == 0);
}

static void test_file_over_socket(int backend)
{
    http_fixture_t f;
    http_client_t *c = open_file_server(&f, backend);
    http_response_t r;
    char etag[64], value[128], fields[256];

    get(c, "GET", "", &r);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_UINT_EQ(r.body_len, FILE_SIZE);
    check_pattern(r.body, FILE_SIZE, 0, 11);
    ASSERT_TRUE(http_header(&r, "ETag", etag, sizeof(etag)));
    ASSERT_TRUE(http_header(&r, "Accept-Ranges", value, sizeof(value)));
    ASSERT_TRUE(http_header(&r, "Last-Modified", value, sizeof(value)));
    http_response_free(&r);

    get(c, "HEAD", "", &r);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_TRUE(http_header(&r, "Content-Length", value, sizeof(value)));
    ASSERT_INT_EQ(atoi(value), FILE_SIZE);
    http_response_free(&r);

    snprintf(fields, sizeof(fields), "If-None-Match: %s\r\n", etag);
    get(c, "GET", fields, &r);
    ASSERT_INT_EQ(r.status, 304);
    ASSERT_INT_EQ(http_header_count(&r, "Content-Length"), 0);
    ASSERT_TRUE(http_header(&r, "ETag", value, sizeof(value)));
    ASSERT_STR_EQ(value, etag);
    http_response_free(&r);

    get(c, "GET", "Range: bytes=1000-1999\r\n", &r);
    ASSERT_INT_EQ(r.status, 206);
    ASSERT_UINT_EQ(r.body_len, 1000);
    check_pattern(r.body, 1000, 1000, 11);
    ASSERT_TRUE(http_header(&r, "Content-Range", value, sizeof(value)));
    ASSERT_STR_EQ(value, "bytes 1000-1999/300000");
    http_response_free(&r);

    get(c, "GET", "Range: bytes=-10\r\n", &r);
    ASSERT_INT_EQ(r.status, 206);
    check_pattern(r.body, 10, FILE_SIZE - 10, 11);
    http_response_free(&r);

    get(c, "GET", "Range: bytes=300000-\r\n", &r);
    ASSERT_INT_EQ(r.status, 416);
    ASSERT_UINT_EQ(r.body_len, 0);
    ASSERT_TRUE(http_header(&r, "Content-Range", value, sizeof(value)));
    ASSERT_STR_EQ(value, "bytes */300000");
    http_response_free(&r);

    /* Pipelined: file responses stay in order with the others. */
    snprintf(fields, sizeof(fields),
             "GET /file HTTP/1.1\r\nHost: t\r\nRange: bytes=0-4\r\n\r\n"
             "HEAD /file HTTP/1.1\r\nHost: t\r\n\r\n"
             "GET /file HTTP/1.1\r\nHost: t\r\nRange: bytes=5-9\r\n\r\n");
    http_client_send_str(c, fields);
    http_read_response(c, &r, false);
    check_pattern(r.body, 5, 0, 11);
    http_response_free(&r);
    http_read_response(c, &r, true);
    ASSERT_INT_EQ(r.status, 200);
    http_response_free(&r);
    http_read_response(c, &r, false);
    check_pattern(r.body, 5, 5, 11);
    http_response_free(&r);

    close_file_server(&f);
}

/* Head then sendfile is two writes: with Nagle's algorithm on, the second
 * waits for the client's delayed ACK (40 ms) on every keep-alive response. */
static void test_file_responses_do_not_stall(int backend)
{
    http_fixture_t f;
    http_client_t *c = open_file_server(&f, backend);
    http_response_t r;
    uint64_t start_ns = px_now_ns();
    for (int i = 0; i < 30; i++) {
        get(c, "GET", "Range: bytes=0-99\r\n", &r);
        ASSERT_INT_EQ(r.status, 206);
        http_response_free(&r);
    }
    uint64_t elapsed_ms = (px_now_ns() - start_ns) / 1000000u;
    if (elapsed_ms >= 600)
        TEST_FAIL("30 file responses took %ju ms", (uintmax_t)elapsed_ms);
    close_file_server(&f);
}

static const test_case_t cases[] = {
    {"test_plans", test_plans, 0},
    {"test_empty_file_plan", test_empty_file_plan, 0},
    ENGINE_CASE(test_file_over_socket),
    ENGINE_CASE(test_file_responses_do_not_stall),
};

TEST_MAIN(cases)
