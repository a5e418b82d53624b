/* The /yjs data path in compiled code, on a thread of its own (collab_ide/engine.py says when and why).
 *
 * Python answers the websocket upgrade, checks the ticket and the workspace, and then hands the TCP
 * connection's descriptor to an Engine (add_conn). From then on this thread reads the connection, parses
 * and unmasks its frames (RFC 6455, with the node's limits), answers pings and the client's close, and
 * writes everything the connection is sent. For each complete message it decides:
 *
 *   - the fast path: a document update (0, 2, <update>) from a connection that may edit, in a room with
 *     nothing waiting for Python, whose update is one of the two shapes keystrokes have (one piece of text
 *     inserted next to items the document has, or one range of the document deleted) and fits the room's
 *     size headroom. It is checked here against the room's state vector exactly as collab_ide/updates.py's
 *     _one_insert / _one_deletion check it, written to every other connection of the room, and queued for
 *     Python (which applies it to the pycrdt document and appends it to the log) without the GIL;
 *   - everything else (sync, awareness, queries, other update shapes, updates from read-only
 *     connections): queued for Python as it came. After a sync message the room stays on that slow path,
 *     in order, until Python says it has handled it (settle); awareness does not hold the room (cursors are
 *     not part of the document). Python's handling decides, forwards and closes as before.
 *
 * A connection with too much waiting for Python is not read until it is handled (QUEUED_MAX), and a room
 * with too many forwarded updates waiting (FAST_PENDING_MAX) sends the rest through Python: one client's
 * flood stays bounded. A connection ends gracefully (C_LINGER) unless it is aborted.
 *
 * Python is woken through an eventfd when something is queued; drain() hands over what waits. One mutex
 * guards everything here; the thread never takes the GIL, Python never holds the mutex while it builds
 * Python objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------------ */
/* growable byte buffers                                                                             */

typedef struct {
    unsigned char *p;
    size_t len, cap, off; /* off: bytes at the front already consumed */
    int borrowed;         /* the engine thread's read buffer, lent while it is parsed: never grown or freed */
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->borrowed) return -1;
    if (b->off && b->off == b->len) b->off = b->len = 0;
    if (b->len + extra <= b->cap) return 0;
    if (b->off) { /* move what is left to the front first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(buf_t *b, const void *data, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static size_t buf_size(const buf_t *b) { return b->len - b->off; }

static void buf_free(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = b->off = 0;
}

/* a buffer that grew for one large message gives its memory back once it is empty */
static void buf_shrink_if_idle(buf_t *b) {
    if (buf_size(b) == 0 && b->cap > 65536) buf_free(b);
}

/* ------------------------------------------------------------------------------------------------ */
/* client id -> clock (a document's state vector)                                                    */

typedef struct {
    uint64_t *keys, *vals;
    unsigned char *used;
    size_t cap, count; /* cap: a power of two */
} svmap_t;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static int sv_get(const svmap_t *m, uint64_t k, uint64_t *v) {
    if (!m->cap) return 0;
    size_t i = mix(k) & (m->cap - 1);
    while (m->used[i]) {
        if (m->keys[i] == k) {
            *v = m->vals[i];
            return 1;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

static int sv_put(svmap_t *m, uint64_t k, uint64_t v);

static int sv_grow(svmap_t *m) {
    svmap_t n = {0};
    n.cap = m->cap ? m->cap * 2 : 16;
    n.keys = calloc(n.cap, sizeof(uint64_t));
    n.vals = calloc(n.cap, sizeof(uint64_t));
    n.used = calloc(n.cap, 1);
    if (!n.keys || !n.vals || !n.used) {
        free(n.keys), free(n.vals), free(n.used);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->used[i]) sv_put(&n, m->keys[i], m->vals[i]);
    free(m->keys), free(m->vals), free(m->used);
    *m = n;
    return 0;
}

/* sets k to max(its value, v) */
static int sv_put(svmap_t *m, uint64_t k, uint64_t v) {
    if ((m->count + 1) * 4 > m->cap * 3 && sv_grow(m) < 0) return -1;
    size_t i = mix(k) & (m->cap - 1);
    while (m->used[i]) {
        if (m->keys[i] == k) {
            if (v > m->vals[i]) m->vals[i] = v;
            return 0;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->used[i] = 1;
    m->keys[i] = k;
    m->vals[i] = v;
    m->count++;
    return 0;
}

static void sv_free(svmap_t *m) {
    free(m->keys), free(m->vals), free(m->used);
    memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------------------------------------ */
/* lib0 decoding                                                                                     */

/* a variable-length unsigned integer (at most 8 bytes, as collab_ide/updates.py reads them); -1 if
 * truncated or too long */
static int read_uint(const unsigned char *p, size_t n, size_t *pos, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    for (int i = 0; i < 8; i++) {
        if (*pos >= n) return -1;
        unsigned char b = p[(*pos)++];
        v |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = v;
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* a client id: Yrs keeps only the low 53 bits of a larger one (collab_ide/updates.py refuses it) */
static int read_client(const unsigned char *p, size_t n, size_t *pos, uint64_t *out) {
    if (read_uint(p, n, pos, out) < 0 || *out > 0x1FFFFFFFFFFFFFULL) return -1;
    return 0;
}

/* The UTF-16 length of UTF-8 text, -1 if it is not UTF-8 (the strictness of Python's bytes.decode) */
static int64_t utf16_units(const unsigned char *s, size_t n) {
    int64_t units = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            units++, i++;
            continue;
        }
        uint32_t cp;
        int extra;
        if (c >= 0xC2 && c <= 0xDF) cp = c & 0x1F, extra = 1;
        else if (c >= 0xE0 && c <= 0xEF) cp = c & 0x0F, extra = 2;
        else if (c >= 0xF0 && c <= 0xF4) cp = c & 0x07, extra = 3;
        else return -1;
        if (i + extra >= n) return -1; /* its continuation bytes are cut off */
        for (int k = 1; k <= extra; k++) {
            unsigned char d = s[i + k];
            if ((d & 0xC0) != 0x80) return -1;
            cp = (cp << 6) | (d & 0x3F);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return -1;
        units += cp >= 0x10000 ? 2 : 1;
        i += extra + 1;
    }
    return units;
}

/* The fast check of an update (see collab_ide/updates.py's check and requirements): 1 when it is one of
 * the shapes keystrokes have and integrates whole against `known`, with the state entry its insertion
 * brings (*adds: it inserts); 0 when Python must decide (any other shape, anything missing or malformed:
 * Python's check says which, and closes). The shapes: one piece of text inserted by one client next to an
 * item it names (a left or right origin), then a delete set; or a delete set alone. Every deleted range
 * must be in the document (or in the insertion), as Yrs would otherwise keep the deletion pending. */
static int fast_check(const unsigned char *u, size_t n, const svmap_t *known, uint64_t *client_out, uint64_t *end_out,
                      int *adds) {
    size_t pos;
    uint64_t client = 0, clock, state = 0, after = 0;
    int inserts = 0;
    if (n < 3) return 0;
    if (u[0] == 1 && u[1] == 1) { /* one client, one struct */
        pos = 2;
        if (read_client(u, n, &pos, &client) < 0) return 0;
        if (read_uint(u, n, &pos, &clock) < 0 || pos >= n) return 0;
        unsigned char info = u[pos++];
        if ((info & 0x3F) != 4 || !(info & 0xC0)) return 0; /* a string item with a left or right origin */
        sv_get(known, client, &state);
        if (clock > state) return 0;
        for (int flag = 0x80; flag >= 0x40; flag >>= 1) {
            if (!(info & flag)) continue;
            uint64_t dep_client, dep_clock, have = 0;
            if (read_client(u, n, &pos, &dep_client) < 0 || read_uint(u, n, &pos, &dep_clock) < 0) return 0;
            if (dep_client == client) { /* its own client's: one before it (Yrs would wait for it forever) */
                if (dep_clock >= clock) return 0;
                continue;
            }
            sv_get(known, dep_client, &have);
            if (dep_clock >= have) return 0;
        }
        uint64_t size;
        if (read_uint(u, n, &pos, &size) < 0) return 0;
        if (size > n - pos) return 0;
        int64_t units = utf16_units(u + pos, (size_t)size);
        if (units < 0) return 0;
        pos += (size_t)size;
        uint64_t end = clock + (uint64_t)units;
        after = end > state ? end : state;
        inserts = 1;
    } else if (u[0] == 0) { /* no structs */
        pos = 1;
    } else {
        return 0;
    }
    uint64_t clients;
    if (read_uint(u, n, &pos, &clients) < 0) return 0;
    for (uint64_t i = 0; i < clients; i++) {
        uint64_t del_client, ranges, have = 0;
        if (read_client(u, n, &pos, &del_client) < 0 || read_uint(u, n, &pos, &ranges) < 0) return 0;
        if (inserts && del_client == client) have = after;
        else sv_get(known, del_client, &have);
        for (uint64_t r = 0; r < ranges; r++) {
            uint64_t start, length;
            if (read_uint(u, n, &pos, &start) < 0 || read_uint(u, n, &pos, &length) < 0) return 0;
            if (length && (start + length > have || start + length < start)) return 0;
        }
    }
    if (pos != n) return 0;
    *client_out = client;
    *end_out = after;
    *adds = inserts;
    return 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* rooms, connections and what waits for Python                                                     */

enum { C_OPEN = 0, C_CLOSING = 1, C_FLUSH_CLOSE = 2, C_LINGER = 3, C_DEAD = 4 };
/* C_CLOSING: our close frame sent, waiting for the client's; C_FLUSH_CLOSE: the last frames are being
 * written; C_LINGER: written and the write side shut down, what the client still sends is read and dropped
 * until it closes too (or LINGER_S passed). Closing at once instead would answer any byte still unread, or
 * still to come, with a reset, and a reset makes the client's kernel drop what it had not yet read: the
 * close frame, and the reason with it. */
#define LINGER_S 2.0
enum { ITEM_MESSAGE = 1, ITEM_CLOSED = 2, ITEM_ASIDE = 3 };
/* ITEM_MESSAGE: a sync message, kept in order with the workspace's updates (the room waits for Python);
 * ITEM_ASIDE: awareness and anything else that is not part of the document (handled in order per connection,
 * without holding up the room's keystrokes) */

#define QUEUED_MAX 64                    /* a connection's messages waiting for Python before its reading pauses */
#define FAST_PENDING_MAX (8u << 20)      /* bytes of a room's forwarded updates waiting for Python before the
                                            room's updates go to Python too (and their senders pause) */

struct room;

typedef struct conn {
    uint32_t idx, gen;
    int fd;
    struct room *room;
    int state, can_edit, slow, quiet, out_armed, in_dirty, reported, paused;
    uint32_t queued;          /* messages of this connection waiting for Python */
    size_t queued_bytes;
    buf_t in, msg, out;
    int in_msg, nfrag;
    uint64_t skip;            /* bytes of a frame being skipped unread (we are closing; or it was too big) */
    double deadline;          /* when a connection waiting for the client's close is aborted */
    struct conn *next_dirty;  /* written at the end of the batch */
} conn_t;

typedef struct room {
    uint32_t idx, gen;
    conn_t **conns;
    size_t nconns, capconns;
    svmap_t known;
    int64_t slow;          /* messages handed to Python and not yet settled */
    int watching;          /* Python's size guard watches the files: every update goes to Python */
    int64_t doc_cap, file_cap, py_size, py_largest, pend_size, pend_add;
    buf_t fast;            /* updates on the fast path not yet drained: [u32 length][bytes]... */
    uint32_t nfast;
    int in_fastlist;
    struct room *next_fast;
} room_t;

typedef struct item {
    int kind;
    conn_t *from;             /* (ITEM_MESSAGE, ITEM_ASIDE; cleared when its connection is freed) */
    uint64_t conn, room;
    unsigned char *data;
    size_t len;
    struct item *next;
} item_t;

typedef struct {
    void **slots;
    uint32_t *gens;
    uint32_t cap, *free_list, nfree, top;
} table_t;

static int table_add(table_t *t, void *obj, uint32_t *idx, uint32_t *gen) {
    uint32_t i;
    if (t->nfree) i = t->free_list[--t->nfree];
    else {
        if (t->top == t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 64;
            void **s = realloc(t->slots, cap * sizeof(void *));
            if (!s) return -1;
            t->slots = s;
            uint32_t *g = realloc(t->gens, cap * sizeof(uint32_t));
            if (!g) return -1;
            t->gens = g;
            uint32_t *f = realloc(t->free_list, cap * sizeof(uint32_t));
            if (!f) return -1;
            t->free_list = f;
            for (uint32_t k = t->cap; k < cap; k++) t->slots[k] = NULL, t->gens[k] = 0;
            t->cap = cap;
        }
        i = t->top++;
    }
    t->slots[i] = obj;
    t->gens[i]++;
    *idx = i;
    *gen = t->gens[i];
    return 0;
}

static void *table_get(const table_t *t, uint64_t handle) {
    uint32_t i = (uint32_t)(handle & 0xffffffffu), g = (uint32_t)(handle >> 32);
    if (i >= t->top || t->gens[i] != g) return NULL;
    return t->slots[i];
}

static void table_remove(table_t *t, uint32_t i) {
    t->slots[i] = NULL;
    t->free_list[t->nfree++] = i;
}

static uint64_t handle_of(uint32_t idx, uint32_t gen) { return ((uint64_t)gen << 32) | idx; }

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_t thread;
    int running, stop;
    int ep, efd, wake; /* epoll; eventfd for Python; eventfd that wakes this thread */
    int notified;
    double batch_s, fast_due, next_deadline_check; /* fast updates wait for Python at most batch_s (fast_due: 0 when none wait) */
    size_t max_message, max_buffer;
    int max_fragments;
    double close_after_s;
    table_t conns, rooms;
    item_t *head, *tail;
    room_t *fastlist;
    conn_t *dirty;
    conn_t **dead;
    size_t ndead, capdead;
    conn_t **tails; /* connections whose first bytes came with the upgrade request: parsed on the thread */
    size_t ntails, captails;
    size_t nclosing;
    /* counters */
    uint64_t fast_updates, slow_messages, slow_consumers_cut, frames_in, sends;
} Engine;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static item_t *queue_item(Engine *e, int kind, conn_t *c, const unsigned char *data, size_t len) {
    item_t *it = calloc(1, sizeof(item_t));
    if (!it) return NULL; /* out of memory: the message is dropped (and the client will resync) */
    it->kind = kind;
    it->conn = handle_of(c->idx, c->gen);
    it->room = c->room ? handle_of(c->room->idx, c->room->gen) : 0;
    if (len) {
        it->data = malloc(len);
        if (!it->data) {
            free(it);
            return NULL;
        }
        memcpy(it->data, data, len);
        it->len = len;
    }
    if (e->tail) e->tail->next = it;
    else e->head = it;
    e->tail = it;
    return it;
}

/* Python is woken at once for a message it must handle (someone waits for its answer), and for updates
 * already forwarded at most every batch_s: applying them to the document and logging them wait that long,
 * so that one wake-up of Python takes many */
static void notify_python(Engine *e) {
    if (e->notified || (!e->head && !e->fastlist)) return;
    if (!e->head) {
        double t = now_s();
        if (!e->fast_due) e->fast_due = t + e->batch_s;
        if (t < e->fast_due) return;
    }
    e->fast_due = 0;
    uint64_t one = 1;
    ssize_t w = write(e->efd, &one, sizeof(one));
    (void)w;
    e->notified = 1;
}

/* --- writing ------------------------------------------------------------------------------------- */

static void conn_kill(Engine *e, conn_t *c);
static void begin_linger(Engine *e, conn_t *c);

static void set_events(Engine *e, conn_t *c) {
    struct epoll_event ev = {.events = (c->paused ? 0 : EPOLLIN) | (c->out_armed ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(e->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void arm_out(Engine *e, conn_t *c, int on) {
    if (c->out_armed == on || c->state == C_DEAD) return;
    c->out_armed = on;
    set_events(e, c);
}

/* reading a connection pauses while too much of it waits for Python (resumed by drain) */
static void set_paused(Engine *e, conn_t *c, int paused) {
    if (c->paused == paused || c->state == C_DEAD) return;
    c->paused = paused;
    set_events(e, c);
}

/* write what is buffered; a connection whose buffer is empty after a close is ended */
static void conn_flush(Engine *e, conn_t *c) {
    if (c->state == C_DEAD) return;
    while (buf_size(&c->out)) {
        ssize_t n = send(c->fd, c->out.p + c->out.off, buf_size(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
        e->sends++;
        if (n > 0) {
            c->out.off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            arm_out(e, c, 1);
            return;
        }
        conn_kill(e, c); /* the connection is broken */
        return;
    }
    c->out.off = c->out.len = 0;
    if (c->out.cap > 4096) buf_free(&c->out); /* a burst's buffer is not kept */
    arm_out(e, c, 0);
    if (c->state == C_FLUSH_CLOSE) begin_linger(e, c);
}

static void mark_dirty(Engine *e, conn_t *c) {
    if (c->in_dirty) return;
    c->in_dirty = 1;
    c->next_dirty = e->dirty;
    e->dirty = c;
}

static void flush_dirty(Engine *e) {
    while (e->dirty) {
        conn_t *c = e->dirty;
        e->dirty = c->next_dirty;
        c->in_dirty = 0;
        conn_flush(e, c);
    }
}

static size_t frame_header(unsigned char *h, int opcode, size_t n) {
    h[0] = 0x80 | (unsigned char)opcode;
    if (n < 126) {
        h[1] = (unsigned char)n;
        return 2;
    }
    if (n < 65536) {
        h[1] = 126, h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)(n >> (56 - 8 * i));
    return 10;
}

static void close_with(Engine *e, conn_t *c, int code, const char *reason, int at_once);

/* queue one frame (written at the end of the batch, or now when `now`); 0 if the connection is gone */
static int conn_queue(Engine *e, conn_t *c, int opcode, const unsigned char *payload, size_t n, int now) {
    if (c->state != C_OPEN) return 0;
    unsigned char h[10];
    size_t hl = frame_header(h, opcode, n);
    if (buf_add(&c->out, h, hl) < 0 || buf_add(&c->out, payload, n) < 0) {
        conn_kill(e, c);
        return 0;
    }
    if (buf_size(&c->out) > e->max_buffer) {
        e->slow_consumers_cut++;
        close_with(e, c, 1013, "not reading fast enough", 0);
        return 0;
    }
    if (now) conn_flush(e, c);
    else mark_dirty(e, c);
    return c->state == C_OPEN;
}

/* our close frame: then wait for the client's (aborted after close_after_s), or close at once after it */
static void close_with(Engine *e, conn_t *c, int code, const char *reason, int at_once) {
    if (c->state != C_OPEN) return;
    unsigned char payload[125];
    size_t rl = strlen(reason);
    if (rl > 123) rl = 123;
    while (rl && (((unsigned char)reason[rl]) & 0xC0) == 0x80) rl--; /* not inside a UTF-8 character */
    payload[0] = (unsigned char)(code >> 8), payload[1] = (unsigned char)code;
    memcpy(payload + 2, reason, rl);
    unsigned char h[10];
    size_t hl = frame_header(h, 8, rl + 2);
    if (buf_add(&c->out, h, hl) < 0 || buf_add(&c->out, payload, rl + 2) < 0) {
        conn_kill(e, c);
        return;
    }
    if (at_once) {
        c->state = C_FLUSH_CLOSE;
    } else {
        c->state = C_CLOSING;
        c->deadline = now_s() + e->close_after_s;
        e->nclosing++;
    }
    conn_flush(e, c);
}

static void room_drop_conn(room_t *r, conn_t *c) {
    for (size_t i = 0; i < r->nconns; i++)
        if (r->conns[i] == c) {
            r->conns[i] = r->conns[--r->nconns];
            return;
        }
}

/* the connection ends: its descriptor is closed, Python is told, the memory goes at the batch's end */
static void conn_kill(Engine *e, conn_t *c) {
    if (c->state == C_DEAD) return;
    if ((c->state == C_CLOSING || c->state == C_LINGER) && e->nclosing) e->nclosing--;
    c->state = C_DEAD;
    epoll_ctl(e->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    for (size_t i = 0; i < e->ntails; i++)
        if (e->tails[i] == c) {
            e->tails[i] = e->tails[--e->ntails];
            break;
        }
    if (!c->reported) {
        c->reported = 1;
        queue_item(e, ITEM_CLOSED, c, NULL, 0);
    }
    table_remove(&e->conns, c->idx);
    if (e->ndead == e->capdead) {
        size_t cap = e->capdead ? e->capdead * 2 : 16;
        conn_t **d = realloc(e->dead, cap * sizeof(conn_t *));
        if (!d) return; /* leaked rather than freed while in use */
        e->dead = d;
        e->capdead = cap;
    }
    e->dead[e->ndead++] = c;
}

static void begin_linger(Engine *e, conn_t *c) {
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_kill(e, c);
        return;
    }
    c->state = C_LINGER;
    c->deadline = now_s() + LINGER_S;
    e->nclosing++;
    set_paused(e, c, 0); /* read (and drop) until the client closes */
    if (!c->reported) { /* the websocket is over: Python lets it go now */
        c->reported = 1;
        queue_item(e, ITEM_CLOSED, c, NULL, 0);
    }
}

static void free_dead(Engine *e) {
    if (e->ndead)
        for (item_t *it = e->head; it; it = it->next)
            if (it->from && it->from->state == C_DEAD) it->from = NULL;
    for (size_t i = 0; i < e->ndead; i++) {
        conn_t *c = e->dead[i];
        if (c->in_dirty) continue; /* (cannot be: dirty ones were flushed first) */
        if (c->room) room_drop_conn(c->room, c); /* here, so that no loop over a room's connections changes */
        buf_free(&c->in), buf_free(&c->msg), buf_free(&c->out);
        free(c);
    }
    e->ndead = 0;
}

/* --- reading ------------------------------------------------------------------------------------- */

static void to_python(Engine *e, conn_t *c, const unsigned char *m, size_t n) {
    int ordered = n == 0 || m[0] == 0; /* a sync message (or one Python refuses): in order with the updates */
    item_t *it = queue_item(e, ordered ? ITEM_MESSAGE : ITEM_ASIDE, c, m, n);
    if (!it) return;
    it->from = c;
    if (ordered && c->room) c->room->slow++;
    e->slow_messages++;
    c->queued++;
    c->queued_bytes += n;
    if (c->queued >= QUEUED_MAX || c->queued_bytes >= e->max_message) set_paused(e, c, 1);
}

/* one complete binary message */
static void on_message(Engine *e, conn_t *c, const unsigned char *m, size_t n) {
    room_t *r = c->room;
    if (!r || r->slow || c->slow || !c->can_edit || r->watching || n < 3 || m[0] != 0 || m[1] != 2 ||
        r->pend_size > (int64_t)FAST_PENDING_MAX) {
        to_python(e, c, m, n);
        return;
    }
    size_t pos = 2;
    uint64_t ulen;
    if (read_uint(m, n, &pos, &ulen) < 0 || ulen != n - pos) {
        to_python(e, c, m, n);
        return;
    }
    const unsigned char *u = m + pos;
    uint64_t client, end;
    int adds;
    if (!fast_check(u, (size_t)ulen, &r->known, &client, &end, &adds)) {
        to_python(e, c, m, n);
        return;
    }
    int64_t len = (int64_t)ulen;
    if (adds && (r->py_size + r->pend_size + len > r->doc_cap || r->py_largest + r->pend_add + len > r->file_cap)) {
        to_python(e, c, m, n); /* near a cap: Python measures */
        return;
    }
    uint32_t l32 = (uint32_t)ulen;
    if (buf_add(&r->fast, &l32, 4) < 0 || buf_add(&r->fast, u, (size_t)ulen) < 0) {
        to_python(e, c, m, n);
        return;
    }
    if (adds) {
        sv_put(&r->known, client, end);
        r->pend_add += len;
    }
    r->pend_size += len;
    r->nfast++;
    e->fast_updates++;
    if (!r->in_fastlist) {
        r->in_fastlist = 1;
        r->next_fast = e->fastlist;
        e->fastlist = r;
    }
    for (size_t i = 0; i < r->nconns; i++) {
        conn_t *o = r->conns[i];
        if (o != c) conn_queue(e, o, 2, m, n, 0);
    }
}

static int valid_close_code(int code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* frames in c->in; returns when it needs more bytes or the connection ended */
static void parse(Engine *e, conn_t *c) {
    for (;;) {
        if (c->state == C_DEAD || c->state == C_FLUSH_CLOSE || c->state == C_LINGER) return;
        unsigned char *p = c->in.p + c->in.off;
        size_t avail = buf_size(&c->in);
        if (c->skip) {
            size_t d = avail < c->skip ? avail : (size_t)c->skip;
            c->in.off += d;
            c->skip -= d;
            if (c->skip) break;
            continue;
        }
        if (avail < 2) break;
        int fin = p[0] & 0x80, rsv = p[0] & 0x70, op = p[0] & 0x0F, masked = p[1] & 0x80;
        uint64_t len = p[1] & 0x7F;
        size_t hl = 2;
        if (rsv) return close_with(e, c, 1002, "reserved bits set", 1);
        if (!masked) return close_with(e, c, 1002, "client frames must be masked", 1);
        if (op >= 8) {
            if (op > 10) return close_with(e, c, 1002, "unknown opcode", 1);
            if (!fin || len > 125) return close_with(e, c, 1002, "control frames are short and whole", 1);
        } else if (op > 2) {
            return close_with(e, c, 1002, "unknown opcode", 1);
        }
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            hl = 10;
            if (len >> 63) return close_with(e, c, 1002, "frame length out of range", 1);
        }
        if (avail < hl + 4) break;
        if (op < 8 && c->state == C_OPEN) {
            uint64_t so_far = (op == 0 ? buf_size(&c->msg) : 0);
            if (len > e->max_message || so_far + len > e->max_message) {
                char why[64];
                snprintf(why, sizeof why, "message over %zu bytes", e->max_message);
                close_with(e, c, 1009, why, 0);
            }
        }
        if (c->state == C_CLOSING && op != 8) { /* we sent our close: anything but the answer is skipped */
            c->skip = hl + 4 + len;
            continue;
        }
        if (avail < hl + 4 + len) {
            if (!c->in.borrowed && buf_reserve(&c->in, hl + 4 + len - avail) < 0) return conn_kill(e, c);
            break;
        }
        unsigned char *key = p + hl, *pl = p + hl + 4;
        for (uint64_t i = 0; i < len; i++) pl[i] ^= key[i & 3];
        c->in.off += hl + 4 + (size_t)len;
        e->frames_in++;
        if (c->state == C_CLOSING) { /* the client's answer to our close */
            if (e->nclosing) e->nclosing--;
            c->state = C_FLUSH_CLOSE;
            conn_flush(e, c);
            return;
        }
        switch (op) {
        case 9:
            conn_queue(e, c, 10, pl, (size_t)len, 0);
            break;
        case 10:
            break;
        case 8: {
            if (len == 1) return close_with(e, c, 1002, "malformed close frame", 1);
            if (len == 0) {
                unsigned char h[2] = {0x88, 0};
                buf_add(&c->out, h, 2);
                c->state = C_FLUSH_CLOSE;
                conn_flush(e, c);
                return;
            }
            int code = (pl[0] << 8) | pl[1];
            if (!valid_close_code(code)) return close_with(e, c, 1002, "invalid close code", 1);
            if (utf16_units(pl + 2, (size_t)len - 2) < 0) return close_with(e, c, 1007, "close reason is not UTF-8", 1);
            unsigned char h[10];
            size_t fl = frame_header(h, 8, (size_t)len);
            buf_add(&c->out, h, fl);
            buf_add(&c->out, pl, (size_t)len);
            c->state = C_FLUSH_CLOSE;
            conn_flush(e, c);
            return;
        }
        case 1:
            if (c->in_msg) return close_with(e, c, 1002, "a new message inside a fragmented one", 1);
            if (fin && utf16_units(pl, (size_t)len) < 0) return close_with(e, c, 1007, "text that is not UTF-8", 1);
            return close_with(e, c, 1003, "this endpoint's messages are binary", 0);
        case 2:
            if (c->in_msg) return close_with(e, c, 1002, "a new message inside a fragmented one", 1);
            if (fin) {
                on_message(e, c, pl, (size_t)len);
            } else {
                c->in_msg = 1;
                c->nfrag = 1;
                c->msg.off = c->msg.len = 0;
                if (buf_add(&c->msg, pl, (size_t)len) < 0) return conn_kill(e, c);
            }
            break;
        case 0:
            if (!c->in_msg) return close_with(e, c, 1002, "a continuation frame without a message", 1);
            if (++c->nfrag > e->max_fragments) {
                char why[64];
                snprintf(why, sizeof why, "message in more than %d frames", e->max_fragments);
                return close_with(e, c, 1009, why, 0);
            }
            if (buf_add(&c->msg, pl, (size_t)len) < 0) return conn_kill(e, c);
            if (fin) {
                c->in_msg = 0;
                on_message(e, c, c->msg.p + c->msg.off, buf_size(&c->msg));
                c->msg.off = c->msg.len = 0;
                buf_shrink_if_idle(&c->msg);
            }
            break;
        }
    }
    if (!c->in.borrowed) buf_shrink_if_idle(&c->in);
}

#define READ_BUFFER 65536

/* A connection's bytes are read into the thread's one buffer and parsed there; only the start of a frame
 * cut short is copied into the connection's own (an idle connection holds no input buffer). */
static void conn_read(Engine *e, conn_t *c) {
    static unsigned char rbuf[READ_BUFFER]; /* (only the engine's thread reads) */
    if (c->state == C_DEAD || c->state == C_FLUSH_CLOSE) return;
    if (c->state == C_LINGER) { /* dropped; the client's end (or an error) ends it */
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) conn_kill(e, c);
        return;
    }
    if (buf_size(&c->in)) { /* a frame began in an earlier read: read on behind it */
        if (buf_reserve(&c->in, 16384) < 0) return conn_kill(e, c);
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->quiet = 0;
            parse(e, c);
            if (buf_size(&c->in) == 0) buf_free(&c->in);
            return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        return conn_kill(e, c); /* EOF or an error */
    }
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        return conn_kill(e, c);
    }
    c->quiet = 0;
    buf_t own = c->in;
    c->in = (buf_t){.p = rbuf, .len = (size_t)n, .cap = sizeof rbuf, .off = 0, .borrowed = 1};
    parse(e, c);
    buf_t left = c->in;
    c->in = own;
    if (c->state != C_DEAD && buf_size(&left) && buf_add(&c->in, left.p + left.off, buf_size(&left)) < 0) conn_kill(e, c);
}

static void check_deadlines(Engine *e) {
    if (!e->nclosing) return;
    double t = now_s();
    if (t < e->next_deadline_check) return; /* (a scan of every connection: at most ten times a second) */
    e->next_deadline_check = t + 0.1;
    for (uint32_t i = 0; i < e->conns.top; i++) {
        conn_t *c = e->conns.slots[i];
        if (c && (c->state == C_CLOSING || c->state == C_LINGER) && c->deadline <= t) conn_kill(e, c);
    }
}

static void *run(void *arg) {
    Engine *e = arg;
    struct epoll_event evs[256];
    for (;;) {
        int timeout = e->nclosing ? 200 : 1000;
        if (e->fast_due && !e->notified) {
            double wait_ms = (e->fast_due - now_s()) * 1000.0;
            int ms = wait_ms <= 0 ? 0 : (int)wait_ms + 1;
            if (ms < timeout) timeout = ms;
        }
        int n = epoll_wait(e->ep, evs, 256, timeout);
        pthread_mutex_lock(&e->mu);
        if (e->stop) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) { /* the wake-up eventfd */
                uint64_t v;
                ssize_t r = read(e->wake, &v, sizeof v);
                (void)r;
                continue;
            }
            conn_t *c = evs[i].data.ptr;
            if (c->state == C_DEAD) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn_read(e, c);
            if (c->state != C_DEAD && (evs[i].events & EPOLLOUT)) conn_flush(e, c);
        }
        while (e->ntails) {
            conn_t *c = e->tails[--e->ntails];
            if (c->state != C_DEAD) parse(e, c);
        }
        check_deadlines(e);
        flush_dirty(e);
        free_dead(e);
        notify_python(e);
        pthread_mutex_unlock(&e->mu);
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* the Python type                                                                                   */

static void lock(Engine *e) {
    if (pthread_mutex_trylock(&e->mu) == 0) return;
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&e->mu);
    Py_END_ALLOW_THREADS
}

/* work done for Python: written and told about before the lock is let go */
static void unlock(Engine *e) {
    flush_dirty(e);
    free_dead(e);
    notify_python(e);
    pthread_mutex_unlock(&e->mu);
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"max_message", "max_buffer", "max_fragments", "close_after_s", "batch_s", NULL};
    Py_ssize_t max_message, max_buffer;
    int max_fragments;
    double close_after = 5.0, batch = 0.01;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nni|dd", kwlist, &max_message, &max_buffer, &max_fragments, &close_after,
                                     &batch))
        return -1;
    e->batch_s = batch;
    if (e->running) {
        PyErr_SetString(PyExc_RuntimeError, "already started");
        return -1;
    }
    e->max_message = (size_t)max_message;
    e->max_buffer = (size_t)max_buffer;
    e->max_fragments = max_fragments;
    e->close_after_s = close_after;
    pthread_mutex_init(&e->mu, NULL);
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->ep < 0 || e->efd < 0 || e->wake < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake, &ev);
    if (pthread_create(&e->thread, NULL, run, e) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "could not start the engine's thread");
        return -1;
    }
    e->running = 1;
    return 0;
}

static void wake_thread(Engine *e) {
    uint64_t one = 1;
    ssize_t w = write(e->wake, &one, sizeof one);
    (void)w;
}

static PyObject *Engine_stop(Engine *e, PyObject *noargs) {
    if (!e->running) Py_RETURN_NONE;
    lock(e);
    e->stop = 1;
    pthread_mutex_unlock(&e->mu);
    wake_thread(e);
    Py_BEGIN_ALLOW_THREADS pthread_join(e->thread, NULL);
    Py_END_ALLOW_THREADS
    e->running = 0;
    for (uint32_t i = 0; i < e->conns.top; i++) {
        conn_t *c = e->conns.slots[i];
        if (c) conn_kill(e, c);
    }
    free_dead(e);
    Py_RETURN_NONE;
}

static void free_items(item_t *it) {
    while (it) {
        item_t *next = it->next;
        free(it->data);
        free(it);
        it = next;
    }
}

static void Engine_dealloc(Engine *e) {
    Engine_stop(e, NULL);
    free_items(e->head);
    for (uint32_t i = 0; i < e->rooms.top; i++) {
        room_t *r = e->rooms.slots[i];
        if (r) {
            free(r->conns);
            sv_free(&r->known);
            buf_free(&r->fast);
            free(r);
        }
    }
    free(e->conns.slots), free(e->conns.gens), free(e->conns.free_list);
    free(e->rooms.slots), free(e->rooms.gens), free(e->rooms.free_list);
    free(e->dead), free(e->tails);
    if (e->ep >= 0) close(e->ep);
    if (e->efd >= 0) close(e->efd);
    if (e->wake >= 0) close(e->wake);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e) e->ep = e->efd = e->wake = -1;
    return (PyObject *)e;
}

static PyObject *Engine_fileno(Engine *e, PyObject *noargs) { return PyLong_FromLong(e->efd); }

static int merge_state_vector(svmap_t *m, const unsigned char *p, size_t n) {
    size_t pos = 0;
    uint64_t count, client, clock;
    if (read_uint(p, n, &pos, &count) < 0) return -1;
    for (uint64_t i = 0; i < count; i++) {
        if (read_uint(p, n, &pos, &client) < 0 || read_uint(p, n, &pos, &clock) < 0) return -1;
        if (sv_put(m, client, clock) < 0) return -1;
    }
    return 0;
}

static void set_sizes(room_t *r, long long doc_cap, long long file_cap, long long size, long long largest, int watching) {
    r->doc_cap = doc_cap, r->file_cap = file_cap, r->py_size = size, r->py_largest = largest, r->watching = watching;
}

/* add_room(state_vector, doc_cap, file_cap, size, largest, watching) -> handle */
static PyObject *Engine_add_room(Engine *e, PyObject *args) {
    Py_buffer sv;
    long long doc_cap, file_cap, size, largest;
    int watching;
    if (!PyArg_ParseTuple(args, "y*LLLLp", &sv, &doc_cap, &file_cap, &size, &largest, &watching)) return NULL;
    room_t *r = calloc(1, sizeof(room_t));
    if (!r || merge_state_vector(&r->known, sv.buf, (size_t)sv.len) < 0) {
        PyBuffer_Release(&sv);
        if (r) sv_free(&r->known);
        free(r);
        return PyErr_Format(PyExc_ValueError, "not a state vector");
    }
    PyBuffer_Release(&sv);
    set_sizes(r, doc_cap, file_cap, size, largest, watching);
    lock(e);
    int bad = table_add(&e->rooms, r, &r->idx, &r->gen);
    uint64_t h = handle_of(r->idx, r->gen);
    unlock(e);
    if (bad) {
        free(r);
        return PyErr_NoMemory();
    }
    return PyLong_FromUnsignedLongLong(h);
}

/* remove_room(handle): its connections must be gone (Python closes them first) */
static PyObject *Engine_remove_room(Engine *e, PyObject *args) {
    unsigned long long h;
    if (!PyArg_ParseTuple(args, "K", &h)) return NULL;
    lock(e);
    room_t *r = table_get(&e->rooms, h);
    if (r) {
        for (size_t i = 0; i < r->nconns; i++) r->conns[i]->room = NULL;
        table_remove(&e->rooms, r->idx);
        if (r->in_fastlist) { /* unlink it */
            room_t **pp = &e->fastlist;
            while (*pp && *pp != r) pp = &(*pp)->next_fast;
            if (*pp) *pp = r->next_fast;
        }
        free(r->conns);
        sv_free(&r->known);
        buf_free(&r->fast);
        free(r);
    }
    unlock(e);
    Py_RETURN_NONE;
}

/* settle(room, done, state_vector, doc_cap, file_cap, size, largest, watching): Python handled `done` of
 * the room's messages; the state vector is merged (a state only grows) and the sizes are Python's */
static PyObject *Engine_settle(Engine *e, PyObject *args) {
    unsigned long long h;
    long long done, doc_cap, file_cap, size, largest;
    int watching;
    Py_buffer sv;
    if (!PyArg_ParseTuple(args, "KLy*LLLLp", &h, &done, &sv, &doc_cap, &file_cap, &size, &largest, &watching))
        return NULL;
    lock(e);
    room_t *r = table_get(&e->rooms, h);
    int bad = 0;
    if (r) {
        r->slow -= done;
        if (r->slow < 0) r->slow = 0;
        bad = merge_state_vector(&r->known, sv.buf, (size_t)sv.len) < 0;
        set_sizes(r, doc_cap, file_cap, size, largest, watching);
    }
    unlock(e);
    PyBuffer_Release(&sv);
    if (bad) return PyErr_Format(PyExc_ValueError, "not a state vector");
    Py_RETURN_NONE;
}

/* add_conn(fd, room, can_edit, preface, tail) -> handle: the engine owns `fd` from now on (it closes it);
 * `preface` is written first (the upgrade's answer, the greeting), `tail` holds bytes already read */
static PyObject *Engine_add_conn(Engine *e, PyObject *args) {
    int fd, can_edit;
    unsigned long long rh;
    Py_buffer preface, tail;
    if (!PyArg_ParseTuple(args, "iKpy*y*", &fd, &rh, &can_edit, &preface, &tail)) return NULL;
    conn_t *c = calloc(1, sizeof(conn_t));
    if (!c) {
        PyBuffer_Release(&preface), PyBuffer_Release(&tail);
        close(fd);
        return PyErr_NoMemory();
    }
    c->fd = fd;
    c->can_edit = can_edit;
    int bad = buf_add(&c->out, preface.buf, (size_t)preface.len) < 0 || buf_add(&c->in, tail.buf, (size_t)tail.len) < 0;
    PyBuffer_Release(&preface), PyBuffer_Release(&tail);
    lock(e);
    room_t *r = table_get(&e->rooms, rh);
    if (!bad && r && r->nconns == r->capconns) {
        size_t cap = r->capconns ? r->capconns * 2 : 4;
        conn_t **cs = realloc(r->conns, cap * sizeof(conn_t *));
        if (cs) r->conns = cs, r->capconns = cap;
        else bad = 1;
    }
    if (!bad && r && e->ntails == e->captails) {
        size_t cap = e->captails ? e->captails * 2 : 16;
        conn_t **t = realloc(e->tails, cap * sizeof(conn_t *));
        if (t) e->tails = t, e->captails = cap;
        else bad = 1;
    }
    if (bad || !r || table_add(&e->conns, c, &c->idx, &c->gen) < 0) {
        pthread_mutex_unlock(&e->mu);
        buf_free(&c->in), buf_free(&c->out);
        free(c);
        close(fd);
        if (!r) return PyErr_Format(PyExc_KeyError, "no such room");
        return PyErr_NoMemory();
    }
    c->room = r;
    r->conns[r->nconns++] = c;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        c->reported = 1; /* Python gets the error, not a "closed" */
        conn_kill(e, c);
        unlock(e);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    uint64_t h = handle_of(c->idx, c->gen);
    conn_flush(e, c);
    if (c->state != C_DEAD && buf_size(&c->in)) {
        e->tails[e->ntails++] = c;
        wake_thread(e);
    }
    unlock(e);
    return PyLong_FromUnsignedLongLong(h);
}

static conn_t *conn_arg(Engine *e, unsigned long long h) {
    conn_t *c = table_get(&e->conns, h);
    return c && c->state != C_DEAD ? c : NULL;
}

/* send(conn, payload) -> bool: one binary frame, written now */
static PyObject *Engine_send(Engine *e, PyObject *args) {
    unsigned long long h;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "Ky*", &h, &b)) return NULL;
    lock(e);
    conn_t *c = conn_arg(e, h);
    int ok = c ? conn_queue(e, c, 2, b.buf, (size_t)b.len, 1) : 0;
    unlock(e);
    PyBuffer_Release(&b);
    return PyBool_FromLong(ok);
}

/* broadcast(room, payload, except_conn): one binary frame to every connection of the room but one */
static PyObject *Engine_broadcast(Engine *e, PyObject *args) {
    unsigned long long rh, skip;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "Ky*K", &rh, &b, &skip)) return NULL;
    lock(e);
    room_t *r = table_get(&e->rooms, rh);
    if (r)
        for (size_t i = 0; i < r->nconns; i++) {
            conn_t *o = r->conns[i];
            if (handle_of(o->idx, o->gen) != skip) conn_queue(e, o, 2, b.buf, (size_t)b.len, 0);
        }
    unlock(e);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

/* close(conn, code, reason): send a close frame, end when the client answers (or close_after_s passed) */
static PyObject *Engine_close(Engine *e, PyObject *args) {
    unsigned long long h;
    int code;
    const char *reason;
    if (!PyArg_ParseTuple(args, "Kis", &h, &code, &reason)) return NULL;
    lock(e);
    conn_t *c = conn_arg(e, h);
    if (c) close_with(e, c, code, reason, 0);
    unlock(e);
    if (c) wake_thread(e); /* its deadline counts from now */
    Py_RETURN_NONE;
}

static PyObject *Engine_abort(Engine *e, PyObject *args) {
    unsigned long long h;
    if (!PyArg_ParseTuple(args, "K", &h)) return NULL;
    lock(e);
    conn_t *c = conn_arg(e, h);
    if (c) conn_kill(e, c);
    unlock(e);
    Py_RETURN_NONE;
}

/* set_conn(conn, can_edit, slow): what Python decided about a connection (its access, updates it holds) */
static PyObject *Engine_set_conn(Engine *e, PyObject *args) {
    unsigned long long h;
    int can_edit, slow;
    if (!PyArg_ParseTuple(args, "Kpp", &h, &can_edit, &slow)) return NULL;
    lock(e);
    conn_t *c = conn_arg(e, h);
    if (c) c->can_edit = can_edit, c->slow = slow;
    unlock(e);
    Py_RETURN_NONE;
}

/* ping_all() -> dropped: every connection that sent nothing since the last ping is dropped, the others pinged */
static PyObject *Engine_ping_all(Engine *e, PyObject *noargs) {
    long dropped = 0;
    lock(e);
    for (uint32_t i = 0; i < e->conns.top; i++) {
        conn_t *c = e->conns.slots[i];
        if (!c || c->state != C_OPEN) continue;
        if (c->quiet) {
            conn_kill(e, c);
            dropped++;
        } else {
            c->quiet = 1;
            conn_queue(e, c, 9, (const unsigned char *)"", 0, 0);
        }
    }
    unlock(e);
    return PyLong_FromLong(dropped);
}

/* drain() -> (fast, items): fast is [(room, [update, ...], bytes, bytes adding items)], items is
 * [(kind, conn, room, message or None)] in the order they came; the eventfd is read first by the caller */
static PyObject *Engine_drain(Engine *e, PyObject *noargs) {
    lock(e);
    item_t *items = e->head;
    e->head = e->tail = NULL;
    for (item_t *it = items; it; it = it->next) {
        conn_t *c = it->from;
        if (!c) continue;
        it->from = NULL;
        c->queued--;
        c->queued_bytes -= it->len;
        if (c->paused && c->queued == 0) set_paused(e, c, 0);
    }
    room_t *rooms = e->fastlist;
    e->fastlist = NULL;
    /* the rooms' queued updates are moved out under the lock; Python objects are made after it */
    typedef struct taken {
        uint64_t room;
        buf_t fast;
        uint32_t n;
        int64_t size, add;
        struct taken *next;
    } taken_t;
    taken_t *took = NULL;
    for (room_t *r = rooms; r; r = r->next_fast) {
        taken_t *t = calloc(1, sizeof(taken_t));
        if (!t) break;
        t->room = handle_of(r->idx, r->gen);
        t->fast = r->fast;
        t->n = r->nfast;
        t->size = r->pend_size, t->add = r->pend_add;
        memset(&r->fast, 0, sizeof r->fast);
        r->nfast = 0;
        r->py_size += r->pend_size, r->py_largest += r->pend_add; /* Python counts them now */
        r->pend_size = r->pend_add = 0;
        r->in_fastlist = 0;
        t->next = took;
        took = t;
    }
    e->notified = 0;
    e->fast_due = 0;
    pthread_mutex_unlock(&e->mu);

    PyObject *fast = PyList_New(0), *out = PyList_New(0), *result = NULL;
    if (!fast || !out) goto done;
    for (taken_t *t = took; t; t = t->next) {
        PyObject *ups = PyList_New(t->n);
        if (!ups) goto done;
        size_t pos = t->fast.off;
        for (uint32_t i = 0; i < t->n; i++) {
            uint32_t l;
            memcpy(&l, t->fast.p + pos, 4);
            PyObject *b = PyBytes_FromStringAndSize((const char *)t->fast.p + pos + 4, l);
            if (!b) {
                Py_DECREF(ups);
                goto done;
            }
            PyList_SET_ITEM(ups, i, b);
            pos += 4 + l;
        }
        PyObject *tup = Py_BuildValue("(KNLL)", (unsigned long long)t->room, ups, (long long)t->size, (long long)t->add);
        if (!tup || PyList_Append(fast, tup) < 0) {
            Py_XDECREF(tup);
            goto done;
        }
        Py_DECREF(tup);
    }
    for (item_t *it = items; it; it = it->next) {
        PyObject *data;
        if (it->kind != ITEM_CLOSED) data = PyBytes_FromStringAndSize(it->data ? (const char *)it->data : "", it->len);
        else data = Py_NewRef(Py_None);
        if (!data) goto done;
        PyObject *tup = Py_BuildValue("(iKKN)", it->kind, (unsigned long long)it->conn, (unsigned long long)it->room, data);
        if (!tup || PyList_Append(out, tup) < 0) {
            Py_XDECREF(tup);
            goto done;
        }
        Py_DECREF(tup);
    }
    result = PyTuple_Pack(2, fast, out);
done:
    Py_XDECREF(fast);
    Py_XDECREF(out);
    free_items(items);
    while (took) {
        taken_t *next = took->next;
        buf_free(&took->fast);
        free(took);
        took = next;
    }
    return result;
}

static PyObject *Engine_stats(Engine *e, PyObject *noargs) {
    lock(e);
    unsigned long long open = 0;
    for (uint32_t i = 0; i < e->conns.top; i++)
        if (e->conns.slots[i]) open++;
    PyObject *d = Py_BuildValue("{sKsKsKsKsKsK}", "fast_updates", (unsigned long long)e->fast_updates, "slow_messages",
                                (unsigned long long)e->slow_messages, "slow_consumers_cut",
                                (unsigned long long)e->slow_consumers_cut, "frames_in", (unsigned long long)e->frames_in,
                                "sends", (unsigned long long)e->sends, "connections", open);
    pthread_mutex_unlock(&e->mu);
    return d;
}

/* fast_check(update, state_vector) -> (client, end, adds) or None: the fast path's check, for the tests
 * that compare it with collab_ide/updates.py */
static PyObject *py_fast_check(PyObject *self, PyObject *args) {
    Py_buffer u, sv;
    if (!PyArg_ParseTuple(args, "y*y*", &u, &sv)) return NULL;
    svmap_t m = {0};
    PyObject *r;
    if (merge_state_vector(&m, sv.buf, (size_t)sv.len) < 0) {
        r = PyErr_Format(PyExc_ValueError, "not a state vector");
    } else {
        uint64_t client, end;
        int adds;
        if (fast_check(u.buf, (size_t)u.len, &m, &client, &end, &adds))
            r = Py_BuildValue("(KKO)", (unsigned long long)client, (unsigned long long)end, adds ? Py_True : Py_False);
        else
            r = Py_NewRef(Py_None);
    }
    sv_free(&m);
    PyBuffer_Release(&u), PyBuffer_Release(&sv);
    return r;
}

static PyMethodDef Engine_methods[] = {
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "the eventfd that is readable when drain() has work"},
    {"add_room", (PyCFunction)Engine_add_room, METH_VARARGS, NULL},
    {"remove_room", (PyCFunction)Engine_remove_room, METH_VARARGS, NULL},
    {"settle", (PyCFunction)Engine_settle, METH_VARARGS, NULL},
    {"add_conn", (PyCFunction)Engine_add_conn, METH_VARARGS, NULL},
    {"send", (PyCFunction)Engine_send, METH_VARARGS, NULL},
    {"broadcast", (PyCFunction)Engine_broadcast, METH_VARARGS, NULL},
    {"close", (PyCFunction)Engine_close, METH_VARARGS, NULL},
    {"abort", (PyCFunction)Engine_abort, METH_VARARGS, NULL},
    {"set_conn", (PyCFunction)Engine_set_conn, METH_VARARGS, NULL},
    {"ping_all", (PyCFunction)Engine_ping_all, METH_NOARGS, NULL},
    {"drain", (PyCFunction)Engine_drain, METH_NOARGS, NULL},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, NULL},
    {"stop", (PyCFunction)Engine_stop, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collab_ide._engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static PyMethodDef module_methods[] = {
    {"fast_check", py_fast_check, METH_VARARGS, "the fast path's update check (for tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_engine", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyModule_AddIntConstant(m, "MESSAGE", ITEM_MESSAGE);
    PyModule_AddIntConstant(m, "CLOSED", ITEM_CLOSED);
    PyModule_AddIntConstant(m, "ASIDE", ITEM_ASIDE);
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
