/*
 * group.c - named groups of WebSocket connections and broadcasting to
 * them from any thread.
 *
 * Groups are process-wide and named, so every worker, every thread and
 * every interpreter of the process that names a group reaches the same
 * one; the registry's lock is taken only to find a group by name, which a
 * caller does once and then keeps the group. A group lives as long as the
 * process (the registry keeps a reference): names are few, and a room that
 * empties is usually joined again.
 *
 * A broadcast takes the group's read lock, so broadcasts to one group run
 * in parallel, and each member's lock just long enough to queue its frame:
 * there is no lock common to all groups or all connections on that path.
 * The frame is built once; members get the same bytes lent to their sends
 * (px_conn_send_owned) when the frame is large, with one reference per
 * send, or a copy when it is small enough that copying is cheaper than
 * the release it saves.
 */
#include "ws_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* Frames below this are copied into each member's send queue. */
#define LEND_MIN_BYTES 4096

struct px_ws_group_s {
    char *name;
    size_t name_len;
    atomic_int refs;
    pthread_rwlock_t lock; /* guards the members */
    px_ws_conn_t **members;
    size_t num_members, cap_members;
    px_ws_group_t *next; /* the registry */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static px_ws_group_t *registry;

int px_ws_group_get(const char *name, size_t len, px_ws_group_t **out)
{
    pthread_mutex_lock(&registry_lock);
    px_ws_group_t *g = registry;
    while (g != NULL &&
           !(g->name_len == len && memcmp(g->name, name, len) == 0))
        g = g->next;
    if (g == NULL) {
        g = calloc(1, sizeof(*g));
        char *copy = malloc(len + 1);
        if (g == NULL || copy == NULL) {
            pthread_mutex_unlock(&registry_lock);
            free(g);
            free(copy);
            return -ENOMEM;
        }
        memcpy(copy, name, len);
        copy[len] = '\0';
        g->name = copy;
        g->name_len = len;
        atomic_init(&g->refs, 1); /* the registry's */
        pthread_rwlock_init(&g->lock, NULL);
        g->next = registry;
        registry = g;
    }
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&registry_lock);
    *out = g;
    return 0;
}

void px_ws_group_unref(px_ws_group_t *g)
{
    /* The registry's reference is never dropped: see the top. */
    if (g != NULL)
        atomic_fetch_sub(&g->refs, 1);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap * 2 : 8;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*arr, cap2 * elem);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = cap2;
    return 0;
}

int px_ws_group_join(px_ws_group_t *g, px_ws_conn_t *wc)
{
    int rc = 0;
    pthread_rwlock_wrlock(&g->lock);
    for (size_t i = 0; i < g->num_members; i++)
        if (g->members[i] == wc)
            goto out;
    rc = grow((void **)&g->members, &g->cap_members, g->num_members + 1,
              sizeof(*g->members));
    if (rc < 0)
        goto out;
    pthread_mutex_lock(&wc->lock);
    if (wc->ended || wc->close_sent) {
        rc = PX_ECLOSED;
    } else {
        rc = grow((void **)&wc->groups, &wc->cap_groups, wc->num_groups + 1,
                  sizeof(*wc->groups));
        if (rc == 0) {
            atomic_fetch_add(&g->refs, 1);
            wc->groups[wc->num_groups++] = g;
        }
    }
    pthread_mutex_unlock(&wc->lock);
    if (rc == 0) {
        px_ws_conn_ref(wc);
        g->members[g->num_members++] = wc;
    }
out:
    pthread_rwlock_unlock(&g->lock);
    return rc;
}

void px__ws_group_remove(px_ws_group_t *g, px_ws_conn_t *wc)
{
    bool found = false;
    pthread_rwlock_wrlock(&g->lock);
    for (size_t i = 0; i < g->num_members; i++) {
        if (g->members[i] == wc) {
            g->members[i] = g->members[--g->num_members];
            found = true;
            break;
        }
    }
    pthread_rwlock_unlock(&g->lock);
    if (found)
        px_ws_conn_unref(wc); /* the membership's */
}

int px_ws_group_leave(px_ws_group_t *g, px_ws_conn_t *wc)
{
    bool mine = false;
    pthread_mutex_lock(&wc->lock);
    for (size_t i = 0; i < wc->num_groups; i++) {
        if (wc->groups[i] == g) {
            wc->groups[i] = wc->groups[--wc->num_groups];
            mine = true;
            break;
        }
    }
    pthread_mutex_unlock(&wc->lock);
    if (mine) {
        px__ws_group_remove(g, wc);
        px_ws_group_unref(g);
    }
    return 0;
}

size_t px_ws_group_size(px_ws_group_t *g)
{
    pthread_rwlock_rdlock(&g->lock);
    size_t n = g->num_members;
    pthread_rwlock_unlock(&g->lock);
    return n;
}

/* A frame lent to many sends. */
typedef struct {
    atomic_size_t refs;
    size_t len;
    char bytes[];
} shared_frame_t;

static void frame_release(void *arg)
{
    shared_frame_t *f = arg;
    if (atomic_fetch_sub(&f->refs, 1) == 1)
        free(f);
}

long px_ws_group_broadcast(px_ws_group_t *g, int opcode, const void *data,
                           size_t len, const px_ws_conn_t *except)
{
    if (opcode != PX_WS_OP_TEXT && opcode != PX_WS_OP_BINARY)
        return -EINVAL;
    uint8_t head[PX_WS_MAX_HEADER];
    size_t head_len = px_ws_frame_header(head, true, false, opcode, len, NULL);
    shared_frame_t *f = malloc(sizeof(*f) + head_len + len);
    if (f == NULL)
        return -ENOMEM;
    atomic_init(&f->refs, 1); /* ours, until the loop ends */
    f->len = head_len + len;
    memcpy(f->bytes, head, head_len);
    if (len > 0)
        memcpy(f->bytes + head_len, data, len);
    bool lend = f->len >= LEND_MIN_BYTES;
    struct iovec iov = {f->bytes, f->len};

    long sent = 0;
    /* Members closed here for reading too slowly leave at once (below,
     * without the read lock), so that later broadcasts skip them even
     * while their close lingers. */
    px_ws_conn_t *stack_dropped[16];
    px_ws_conn_t **dropped = stack_dropped;
    size_t num_dropped = 0, cap_dropped = 16;
    pthread_rwlock_rdlock(&g->lock);
    for (size_t i = 0; i < g->num_members; i++) {
        px_ws_conn_t *wc = g->members[i];
        if (wc == except)
            continue;
        pthread_mutex_lock(&wc->lock);
        bool was_open = !wc->close_sent && !wc->ended;
        bool may = px__ws_may_send(wc);
        if (!may && was_open && wc->close_sent) {
            if (num_dropped == cap_dropped) {
                px_ws_conn_t **more = malloc(2 * cap_dropped * sizeof(*more));
                if (more != NULL) {
                    memcpy(more, dropped, num_dropped * sizeof(*more));
                    if (dropped != stack_dropped)
                        free(dropped);
                    dropped = more;
                    cap_dropped *= 2;
                }
            }
            if (num_dropped < cap_dropped) {
                px_ws_conn_ref(wc);
                dropped[num_dropped++] = wc;
            }
        }
        if (may) {
            int rc;
            if (lend) {
                atomic_fetch_add(&f->refs, 1);
                rc = px_conn_send_owned(wc->conn, NULL, f->bytes, f->len,
                                        frame_release, f, NULL);
            } else {
                rc = px_conn_send(wc->conn, &iov, 1, NULL);
            }
            if (rc == 0)
                sent++;
        }
        pthread_mutex_unlock(&wc->lock);
    }
    pthread_rwlock_unlock(&g->lock);
    frame_release(f);
    for (size_t i = 0; i < num_dropped; i++) {
        px_ws_group_leave(g, dropped[i]);
        px_ws_conn_unref(dropped[i]);
    }
    if (dropped != stack_dropped)
        free(dropped);
    return sent;
}
