/* The fan-out benchmark's receiving side, in C: it takes over websocket connections that bench/fanout.py
 * opened, upgraded, connected to Socket.IO and joined to the room, and reads them with epoll.
 *
 * At 100,000+ deliveries/s the Python receivers (bench/lightclient.py) used most of their core, so the
 * load generator, not the server, could set the ceiling. Here a delivery costs a read and a scan.
 *
 * Usage: fanrecv FD...   (the sockets, inherited). Commands on stdin, one per line:
 *   start  - forget what was counted, start counting chat:message deliveries
 *   count  - print the deliveries counted so far: "<n>\n"
 *   stop   - stop counting; print "<n>\n", then n little-endian uint32 latencies in microseconds
 *   quit   - exit
 * A delivery is a Socket.IO EVENT packet whose payload carries "T=<CLOCK_MONOTONIC ns at send>" (the
 * sender uses Python's time.perf_counter_ns, the same clock). Engine.IO pings ("2") are answered with
 * pongs ("3"), websocket pings with pongs; client frames are masked with a zero key, as RFC 6455 allows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    unsigned char *buf;
    size_t len, cap;
} conn_t;

static uint32_t *lat;
static size_t nlat, caplat;
static int active;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void send_frame(int fd, int opcode, const unsigned char *payload, size_t n) {
    unsigned char out[6 + 125];
    if (n > 125) return;
    out[0] = 0x80 | (unsigned char)opcode;
    out[1] = 0x80 | (unsigned char)n;
    memset(out + 2, 0, 4);
    memcpy(out + 6, payload, n);
    if (send(fd, out, 6 + n, MSG_NOSIGNAL) < 0 && errno != EAGAIN) perror("send");
}

static void on_packet(int fd, const unsigned char *p, size_t n, uint64_t t) {
    if (n == 1 && p[0] == '2') { /* Engine.IO ping */
        send_frame(fd, 0x1, (const unsigned char *)"3", 1);
        return;
    }
    if (!active || n < 4 || p[0] != '4' || p[1] != '2') return;
    const unsigned char *q = memmem(p, n, "T=", 2);
    if (!q) return;
    q += 2;
    uint64_t sent = 0;
    while (q < p + n && *q >= '0' && *q <= '9') sent = sent * 10 + (uint64_t)(*q++ - '0');
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) abort();
    }
    lat[nlat++] = t > sent ? (uint32_t)((t - sent) / 1000) : 0;
}

/* Parse every complete frame in c->buf; keep the rest. Returns -1 when the connection should close. */
static int drain(conn_t *c, uint64_t t) {
    size_t pos = 0;
    while (c->len - pos >= 2) {
        unsigned char b0 = c->buf[pos], b1 = c->buf[pos + 1];
        size_t start = pos + 2;
        uint64_t length = b1 & 0x7F;
        if (length == 126) {
            if (c->len - start < 2) break;
            length = ((uint64_t)c->buf[start] << 8) | c->buf[start + 1];
            start += 2;
        } else if (length == 127) {
            if (c->len - start < 8) break;
            length = 0;
            for (int i = 0; i < 8; i++) length = (length << 8) | c->buf[start + i];
            start += 8;
        }
        if (c->len - start < length) {
            if (start + length > c->cap) {
                c->cap = start + length;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf) abort();
            }
            break;
        }
        int opcode = b0 & 0x0F;
        const unsigned char *payload = c->buf + start;
        if (opcode == 0x8) return -1;
        if (opcode == 0x9) send_frame(c->fd, 0xA, payload, length);
        else if (opcode == 0x1 || opcode == 0x2) on_packet(c->fd, payload, length, t);
        pos = start + length;
    }
    if (pos) {
        memmove(c->buf, c->buf + pos, c->len - pos);
        c->len -= pos;
    }
    return 0;
}

static void command(const char *line) {
    if (!strncmp(line, "start", 5)) {
        nlat = 0;
        active = 1;
    } else if (!strncmp(line, "count", 5)) {
        printf("%zu\n", nlat);
        fflush(stdout);
    } else if (!strncmp(line, "stop", 4)) {
        active = 0;
        printf("%zu\n", nlat);
        fflush(stdout);
        if (nlat && fwrite(lat, sizeof *lat, nlat, stdout) != nlat) perror("fwrite");
        fflush(stdout);
    } else if (!strncmp(line, "quit", 4)) {
        exit(0);
    }
}

int main(int argc, char **argv) {
    int ep = epoll_create1(0);
    int nconn = argc - 1;
    conn_t *conns = calloc((size_t)nconn + 1, sizeof *conns);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = (uint64_t)nconn; /* stdin */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = atoi(argv[i + 1]);
        conns[i].cap = 65536;
        conns[i].buf = malloc(conns[i].cap);
        ev.data.u64 = (uint64_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) {
            perror("epoll_ctl");
            return 1;
        }
    }
    char line[64];
    size_t linelen = 0;
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno == EINTR) continue;
        uint64_t t = now_ns();
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u64;
            if (i == nconn) {
                ssize_t r = read(0, line + linelen, sizeof line - 1 - linelen);
                if (r <= 0) return 0;
                linelen += (size_t)r;
                line[linelen] = 0;
                char *nl;
                while ((nl = strchr(line, '\n'))) {
                    *nl = 0;
                    command(line);
                    size_t rest = linelen - (size_t)(nl + 1 - line);
                    memmove(line, nl + 1, rest + 1);
                    linelen = rest;
                }
                continue;
            }
            conn_t *c = &conns[i];
            ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->len += (size_t)r;
            if (drain(c, t) < 0) epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        }
    }
}
