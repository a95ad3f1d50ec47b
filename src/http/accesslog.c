/*
 * accesslog.c - the access log: one line per request, in Apache's common
 * or combined format or as JSON, gathered in per-worker buffers and
 * written by whole lines (see px_http_ops.h).
 *
 * Why per-worker buffers rather than a queue to one writer: a line is
 * formatted where the request ends, under the mutex of its connection's
 * worker's buffer, which only that worker takes (and, rarely, a thread
 * answering late, or the flusher once a second), so the request path
 * takes no lock another worker holds and wakes no thread. A buffer is
 * written when it passes FLUSH_BYTES (by the worker, one write per ~150
 * lines) and by the flusher thread at least every FLUSH_PERIOD_MS, so a
 * quiet server's lines still appear within a second.
 *
 * Writes are whole lines: to a regular file opened O_APPEND a write lands
 * whole after the others; to a pipe or a terminal (standard error under a
 * supervisor) a write of at most PIPE_BUF bytes is atomic, so buffers go
 * out in pieces of whole lines no larger than that, and lines of different
 * workers never interleave.
 *
 * Reopening (logrotate's rename then SIGUSR1) opens the path anew and
 * dup3()s it onto the log's descriptor: writers keep using the same
 * number and no lock is needed around writes.
 */
#include "http_internal.h"
#include "ops_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_BYTES (32u << 10)
#define FLUSH_PERIOD_MS 1000
/* Buffer capacity kept between flushes. */
#define KEEP_BYTES (64u << 10)

typedef struct {
    alignas(64) pthread_mutex_t lock;
    px__bytebuf_t buf;
} logbuf_t;

static logbuf_t bufs[PX_MAX_WORKERS];
static pthread_once_t bufs_once = PTHREAD_ONCE_INIT;

/* The log's configuration; lock guards all but the atomics. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_int fd;      /* -1: closed */
    atomic_bool pieces; /* write in PIPE_BUF pieces (not a regular file) */
    atomic_int format;
    char *path; /* NULL: standard error */
    bool flusher_running, stopping;
    pthread_t flusher;
} log_state = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .fd = -1,
};

static void init_bufs(void)
{
    for (int i = 0; i < PX_MAX_WORKERS; i++)
        pthread_mutex_init(&bufs[i].lock, NULL);
}

/* ---- writing --------------------------------------------------------------
 */

static void write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* a full disk or a closed pipe: lines are dropped */
        data += n;
        len -= (size_t)n;
    }
}

/* Writes whole lines; b->lock held. */
static void write_out(px__bytebuf_t *b)
{
    int fd = atomic_load(&log_state.fd);
    if (fd >= 0 && b->len > 0) {
        if (!atomic_load(&log_state.pieces)) {
            write_all(fd, b->data, b->len);
        } else {
            size_t pos = 0;
            while (pos < b->len) {
                size_t n = b->len - pos;
                if (n > PIPE_BUF) {
                    /* The last line end within PIPE_BUF; a longer line
                     * goes alone. */
                    const char *end = b->data + pos + PIPE_BUF;
                    while (end > b->data + pos && end[-1] != '\n')
                        end--;
                    if (end == b->data + pos) {
                        end = memchr(b->data + pos, '\n', n);
                        end = end ? end + 1 : b->data + b->len;
                    }
                    n = (size_t)(end - (b->data + pos));
                }
                write_all(fd, b->data + pos, n);
                pos += n;
            }
        }
    }
    px__bytebuf_reset(b, KEEP_BYTES);
}

static void flush_all(void)
{
    pthread_once(&bufs_once, init_bufs);
    for (int i = 0; i < PX_MAX_WORKERS; i++) {
        pthread_mutex_lock(&bufs[i].lock);
        if (bufs[i].buf.len > 0)
            write_out(&bufs[i].buf);
        pthread_mutex_unlock(&bufs[i].lock);
    }
}

static void *flusher(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&log_state.lock);
    while (!log_state.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += FLUSH_PERIOD_MS / 1000;
        pthread_cond_timedwait(&log_state.wake, &log_state.lock, &until);
        if (log_state.stopping)
            break;
        pthread_mutex_unlock(&log_state.lock);
        flush_all();
        pthread_mutex_lock(&log_state.lock);
    }
    pthread_mutex_unlock(&log_state.lock);
    return NULL;
}

/* ---- formatting ------------------------------------------------------------
 */

/* The time as the formats write it, made once a second per thread. */
static _Thread_local struct {
    time_t second;
    char clf[40]; /* [07/Dec/2026:05:14:55 +0000] */
    char iso[40]; /* 2026-12-07T05:14:55+0000 */
} time_cache = {-1, "", ""};

static void update_time(void)
{
    time_t now = time(NULL);
    if (now == time_cache.second)
        return;
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(time_cache.clf, sizeof(time_cache.clf), "[%d/%b/%Y:%H:%M:%S %z]",
             &tm);
    strftime(time_cache.iso, sizeof(time_cache.iso), "%Y-%m-%dT%H:%M:%S%z",
             &tm);
    time_cache.second = now;
}

static void put(px__bytebuf_t *b, const char *s, size_t len)
{
    (void)px__bytebuf_append(b, s, len);
}

static void puts_(px__bytebuf_t *b, const char *s) { put(b, s, strlen(s)); }

/* Appends s quoted: Apache's escapes (\" \\ \xhh) for the log formats,
 * JSON's for JSON (bytes over 0x7f as the code points of Latin-1, so that
 * the line is valid JSON whatever a client sent). */
static void put_quoted(px__bytebuf_t *b, const char *s, size_t len, bool json)
{
    static const char hex[] = "0123456789abcdef";
    if (px__bytebuf_reserve(b, len * 6 + 2) < 0)
        return;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            *o++ = (char)c;
        } else if (json) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

static const px_http_header_t *find_field(const px_http_request_t *head,
                                          const char *lower, size_t len)
{
    for (size_t i = 0; i < head->num_headers; i++) {
        const px_http_header_t *h = &head->headers[i];
        if (h->name_len == len && px__http_name_is(h->name, len, lower))
            return h;
    }
    return NULL;
}

/* A field's value quoted, or "-" (null in JSON) when absent. */
static void put_field(px__bytebuf_t *b, const px_http_request_t *head,
                      const char *lower, bool json)
{
    const px_http_header_t *h =
        head ? find_field(head, lower, strlen(lower)) : NULL;
    if (h != NULL)
        put_quoted(b, h->value, h->value_len, json);
    else
        puts_(b, json ? "null" : "\"-\"");
}

void px__http_log_begin(px__http_obs_t *obs, const char *client,
                        const px_http_request_t *head)
{
    px__bytebuf_t *b = &obs->line;
    int format = atomic_load_explicit(&log_state.format, memory_order_relaxed);
    b->len = 0;
    update_time();
    if (client[0] == '\0')
        client = "-";
    if (format == PX_HTTP_LOG_JSON) {
        puts_(b, "{\"time\":\"");
        puts_(b, time_cache.iso);
        puts_(b, "\",\"client\":");
        put_quoted(b, client, strlen(client), true);
        if (head != NULL) {
            puts_(b, ",\"method\":");
            put_quoted(b, head->method, head->method_len, true);
            puts_(b, ",\"path\":");
            put_quoted(b, head->target, head->target_len, true);
            puts_(b, head->minor_version ? ",\"version\":\"HTTP/1.1\""
                                         : ",\"version\":\"HTTP/1.0\"");
        } else {
            puts_(b, ",\"method\":null,\"path\":null,\"version\":null");
        }
        obs->split = b->len;
        puts_(b, ",\"referer\":");
        put_field(b, head, "referer", true);
        puts_(b, ",\"user_agent\":");
        put_field(b, head, "user-agent", true);
        puts_(b, "}");
        return;
    }
    puts_(b, client);
    puts_(b, " - - ");
    puts_(b, time_cache.clf);
    if (head != NULL) {
        /* Method and target are tokens and visible characters (the
         * parser refused anything else): quoted as they are. */
        puts_(b, " \"");
        put(b, head->method, head->method_len);
        puts_(b, " ");
        put(b, head->target, head->target_len);
        puts_(b, head->minor_version ? " HTTP/1.1\"" : " HTTP/1.0\"");
    } else {
        puts_(b, " \"-\"");
    }
    obs->split = b->len;
    if (format == PX_HTTP_LOG_COMBINED) {
        puts_(b, " ");
        put_field(b, head, "referer", false);
        puts_(b, " ");
        put_field(b, head, "user-agent", false);
    }
}

/* Writes v in decimal at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        *p++ = digits[--n];
    return p;
}

void px__http_log_line(int worker, const px__http_obs_t *obs, int status,
                       uint64_t bytes, uint64_t duration_ns)
{
    char middle[96];
    int n;
    if (atomic_load_explicit(&log_state.format, memory_order_relaxed) ==
        PX_HTTP_LOG_JSON) {
        n = snprintf(middle, sizeof(middle),
                     ",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%.3f",
                     status, (unsigned long long)bytes,
                     (double)duration_ns / 1e6);
    } else {
        /* The common formats' hot path: no snprintf. */
        char *p = middle;
        *p++ = ' ';
        p = put_u64(p, (uint64_t)(status > 0 ? status : 0));
        *p++ = ' ';
        if (bytes == 0)
            *p++ = '-';
        else
            p = put_u64(p, bytes);
        n = (int)(p - middle);
    }
    pthread_once(&bufs_once, init_bufs);
    logbuf_t *lb = &bufs[(unsigned)worker % PX_MAX_WORKERS];
    pthread_mutex_lock(&lb->lock);
    px__bytebuf_t *b = &lb->buf;
    size_t need = obs->line.len + (size_t)n + 1;
    if (px__bytebuf_reserve(b, need) == 0) {
        memcpy(b->data + b->len, obs->line.data, obs->split);
        memcpy(b->data + b->len + obs->split, middle, (size_t)n);
        memcpy(b->data + b->len + obs->split + (size_t)n,
               obs->line.data + obs->split, obs->line.len - obs->split);
        b->len += need;
        b->data[b->len - 1] = '\n';
        if (b->len >= FLUSH_BYTES)
            write_out(b);
    }
    pthread_mutex_unlock(&lb->lock);
}

/* ---- the API
 * ----------------------------------------------------------------- */

static int open_path(const char *path, bool *pieces)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return -errno;
    struct stat st;
    *pieces = fstat(fd, &st) < 0 || !S_ISREG(st.st_mode);
    return fd;
}

int px_http_access_log_open(const char *path, px_http_log_format_t format)
{
    if (format < PX_HTTP_LOG_COMMON || format > PX_HTTP_LOG_JSON)
        return -EINVAL;
    pthread_once(&bufs_once, init_bufs);
    pthread_mutex_lock(&log_state.lock);
    if (atomic_load(&log_state.fd) >= 0) {
        pthread_mutex_unlock(&log_state.lock);
        return PX_EBADSTATE;
    }
    int fd = STDERR_FILENO;
    bool pieces = true;
    char *copy = NULL;
    if (path != NULL) {
        copy = strdup(path);
        fd = copy ? open_path(path, &pieces) : -ENOMEM;
        if (fd < 0) {
            pthread_mutex_unlock(&log_state.lock);
            free(copy);
            return fd;
        }
    } else {
        struct stat st;
        pieces = fstat(fd, &st) < 0 || !S_ISREG(st.st_mode);
    }
    tzset(); /* localtime_r need not read TZ itself */
    log_state.path = copy;
    atomic_store(&log_state.format, (int)format);
    atomic_store(&log_state.pieces, pieces);
    atomic_store(&log_state.fd, fd);
    log_state.stopping = false;
    int rc = pthread_create(&log_state.flusher, NULL, flusher, NULL);
    log_state.flusher_running = rc == 0;
    pthread_mutex_unlock(&log_state.lock);
    if (rc != 0) {
        px_http_access_log_close();
        return -rc;
    }
    atomic_fetch_or(
        &px__http_ops_on,
        PX__HTTP_OPS_LOG |
            (format == PX_HTTP_LOG_JSON ? PX__HTTP_OPS_LOG_DURATION : 0));
    return 0;
}

int px_http_access_log_reopen(void)
{
    pthread_mutex_lock(&log_state.lock);
    int fd = atomic_load(&log_state.fd);
    if (fd < 0 || log_state.path == NULL) {
        pthread_mutex_unlock(&log_state.lock);
        return fd < 0 ? PX_EBADSTATE : 0;
    }
    bool pieces;
    int nfd = open_path(log_state.path, &pieces);
    if (nfd < 0) {
        pthread_mutex_unlock(&log_state.lock);
        return nfd;
    }
    /* What was logged before the signal belongs in the old file. */
    flush_all();
    int rc = dup3(nfd, fd, O_CLOEXEC) < 0 ? -errno : 0;
    if (rc == 0)
        atomic_store(&log_state.pieces, pieces);
    close(nfd);
    pthread_mutex_unlock(&log_state.lock);
    return rc;
}

void px_http_access_log_flush(void) { flush_all(); }

void px_http_access_log_close(void)
{
    atomic_fetch_and(&px__http_ops_on,
                     ~(PX__HTTP_OPS_LOG | PX__HTTP_OPS_LOG_DURATION));
    pthread_mutex_lock(&log_state.lock);
    bool join = log_state.flusher_running;
    log_state.stopping = true;
    log_state.flusher_running = false;
    pthread_cond_signal(&log_state.wake);
    pthread_mutex_unlock(&log_state.lock);
    if (join)
        pthread_join(log_state.flusher, NULL);
    flush_all();
    pthread_mutex_lock(&log_state.lock);
    int fd = atomic_exchange(&log_state.fd, -1);
    /* A writer loads the descriptor under its buffer's lock: once each
     * lock was taken after the exchange, none still uses it, and closing
     * cannot make a late line land in a file opened later under the same
     * number. */
    for (int i = 0; i < PX_MAX_WORKERS; i++) {
        pthread_mutex_lock(&bufs[i].lock);
        pthread_mutex_unlock(&bufs[i].lock);
    }
    if (fd >= 0 && log_state.path != NULL)
        close(fd);
    free(log_state.path);
    log_state.path = NULL;
    pthread_mutex_unlock(&log_state.lock);
}
