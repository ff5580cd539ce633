/* wssoak.c -- the session client of the fastgw soak benchmark (benchmarks/soak).
 *
 * One single-threaded epoll process that holds thousands of WebSocket sessions and is driven by
 * commands on stdin, so that the harness can measure the proxy (RSS, CPU) between the steps of a
 * scenario while the sessions stay open.  Sessions live in numbered groups (0..7): the slow
 * consumer part keeps its 50 healthy sessions and its 1,000 stalled ones in one process.
 *
 * RFC 6455 client side: a fresh random Sec-WebSocket-Key per session and a check of the 101, of
 * "Upgrade: websocket", of "Connection: upgrade" and of Sec-WebSocket-Accept (section 4.1); every
 * frame sent is masked with a fresh random key (section 5.3); server frames must be unmasked; the
 * close handshake expects the server's Close and then the server closing TCP first (7.1.1).
 *
 * Commands (one per line); each prints "result KEY VALUE" lines, then "done":
 *   open G N CONC PATH TIMEOUT [stall]
 *        open N sessions into group G, at most CONC handshakes in flight (CONC >= N: every
 *        connect() is issued at once, the storm).  Reports the time from the first connect() to
 *        the last verified 101, when the last connect() was issued, handshake-time percentiles
 *        (from each session's connect() to its 101) and failures by reason.  "stall":
 *        the sessions stop reading after their 101 (slow consumers).  Their sockets announce a
 *        1460-byte MSS (an Ethernet path) and a small receive buffer: on loopback Linux sizes a
 *        sender's buffer from the peer's 64 KiB MSS (2 x 10 x 128 KiB = 2.5 MiB per socket), and
 *        1,000 such stalled sockets would push the whole machine into TCP memory pressure.
 *   echo G TIMEOUT          one small message on every session of G; each echo is compared.
 *   latency G COUNT PERIOD_US TIMEOUT
 *        every session of G sends a 64-byte message every PERIOD_US, one in flight at most,
 *        until COUNT round trips in all; reports p50/p90/p99/max in microseconds.
 *   close G TIMEOUT         Close 1000 on every session of G; counts the Close codes received and
 *                           whether the server then closed TCP.
 *   drop G                  close the sockets of G without a close handshake (stalled sessions
 *                           cannot do one: their receive queues are full); reports how many
 *                           were still established (TCP_INFO), i.e. not cut by the proxy.
 * Failure reasons: refused, reset, eof, status (not a 101), accept (a wrong Accept or Upgrade or
 * Connection header), protocol (a bad server frame or a wrong echo), timeout, other; the first
 * message of each kind is printed as "result why_<reason> <text>".
 *
 * Usage: wssoak -p PORT [-a ADDR]   (raises its own soft RLIMIT_NOFILE to the hard limit)
 */
#include "common.h"      /* benchmarks/e2e/csrc: SHA-1, base64, masking, helpers */
#include <stdarg.h>
#include <sys/resource.h>

#define RBUF 1024            /* per session: the 101's head, then at most a few small frames */
#define NGROUPS 8
#define STALL_RCVBUF 16384
#define STALL_MSS 1460
#define LAT_SIZE 64

enum { S_CONNECTING = 1, S_HANDSHAKE, S_OPEN, S_STALLED, S_ECHO, S_LAT, S_LAT_WAIT, S_CLOSING,
       S_CLOSE_EOF, S_DEAD };
enum { R_REFUSED, R_RESET, R_EOF, R_STATUS, R_ACCEPT, R_PROTOCOL, R_TIMEOUT, R_OTHER, NREASONS };
static const char *REASON[NREASONS] = { "refused", "reset", "eof", "status", "accept", "protocol",
                                        "timeout", "other" };

typedef struct sess {
    int fd, state, busy, stall, close_code;
    unsigned idx;
    uint64_t t0;                  /* connect() time, then the send time of the message in flight */
    uint64_t due;                 /* latency: when the next message is to be sent */
    char accept[29];
    unsigned char sent[LAT_SIZE]; unsigned sent_len;
    unsigned char buf[RBUF]; unsigned blen;
} sess;

typedef struct { sess **s; unsigned n, cap; } group;

static int ep;
static struct sockaddr_in target;
static group groups[NGROUPS];
static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* the command in progress */
static unsigned op_pending, op_ok;
static unsigned op_fail[NREASONS];
static char op_why[NREASONS][160];
static uint64_t *op_times; static unsigned op_ntimes;
static uint64_t op_last;                       /* time of the last successful completion */
static unsigned lat_budget, lat_sent;          /* latency: round trips to do in all, started */
static uint64_t lat_period;                    /* latency: ns between a session's sends */
static unsigned n_close1000, n_close_other, n_tcp_closed;

static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void ev_set(sess *s, uint32_t events) {
    struct epoll_event ev = { .events = events, .data.ptr = s };
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void kill_sess(sess *s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1; s->state = S_DEAD;
}

static void op_done(sess *s) { if (s->busy) { s->busy = 0; op_pending--; } }

static void fail(sess *s, int reason, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(sess *s, int reason, const char *fmt, ...) {
    if (!op_fail[reason]++) {
        va_list ap; va_start(ap, fmt);
        vsnprintf(op_why[reason], sizeof op_why[reason], fmt, ap);
        va_end(ap);
    }
    kill_sess(s);
    op_done(s);
}

static int errno_reason(int e) {
    return e == ECONNREFUSED ? R_REFUSED : (e == ECONNRESET || e == EPIPE) ? R_RESET : R_OTHER;
}

/* Send a masked frame (FIN set) with a payload of at most 125 bytes; small frames on a socket
 * whose peer reads always fit, so a short write is a failure. */
static int send_frame(sess *s, int opcode, const unsigned char *p, unsigned n) {
    unsigned char f[6 + 125];
    uint32_t k = (uint32_t)rnd();
    f[0] = (unsigned char)(0x80 | opcode); f[1] = (unsigned char)(0x80 | n);
    memcpy(f + 2, &k, 4);
    ws_unmask_copy(f + 6, p, n, f + 2, 0);
    ssize_t w = send(s->fd, f, 6 + n, MSG_NOSIGNAL);
    if (w == (ssize_t)(6 + n)) return 0;
    if (w < 0) fail(s, errno_reason(errno), "send: %s", strerror(errno));
    else fail(s, R_OTHER, "short write of a %u-byte frame", 6 + n);
    return -1;
}

static int send_echo_probe(sess *s, unsigned n) {
    for (unsigned i = 0; i < n; i++) s->sent[i] = (unsigned char)('a' + (s->idx + i) % 26);
    snprintf((char *)s->sent, n, "soak %u ", s->idx);
    s->sent[strlen((char *)s->sent)] = '.';
    s->sent_len = n;
    s->t0 = now_ns();
    return send_frame(s, 2, s->sent, n);
}

/* One complete server frame at the start of s->buf: 1 and its fields; 0: incomplete; -1: bad. */
static int next_frame(sess *s, int *opcode, unsigned char **payload, unsigned *len,
                      unsigned *used) {
    if (s->blen < 2) return 0;
    unsigned b0 = s->buf[0], b1 = s->buf[1], l = b1 & 127, off = 2;
    if ((b1 & 0x80) || (b0 & 0x70) || !(b0 & 0x80)) return -1;   /* masked, RSV, fragmented */
    if (l == 126) {
        if (s->blen < 4) return 0;
        l = (unsigned)s->buf[2] << 8 | s->buf[3]; off = 4;
    } else if (l == 127) return -1;
    if (off + l > RBUF) return -1;
    if (s->blen < off + l) return 0;
    *opcode = b0 & 15; *payload = s->buf + off; *len = l; *used = off + l;
    return 1;
}

static void consume(sess *s, unsigned n) { memmove(s->buf, s->buf + n, s->blen - n); s->blen -= n; }

static void record_time(uint64_t t) {
    op_times[op_ntimes++] = t;
    op_last = now_ns();
}

/* Frames received in S_ECHO, S_LAT, S_CLOSING or (unexpectedly) S_OPEN. */
static void on_frames(sess *s) {
    int opcode, r; unsigned char *p; unsigned len, used;
    while ((r = next_frame(s, &opcode, &p, &len, &used)) == 1) {
        if (s->state == S_CLOSING) {
            if (opcode == 8) {
                s->close_code = len >= 2 ? (p[0] << 8 | p[1]) : 1005;
                if (s->close_code == 1000) n_close1000++; else n_close_other++;
                s->state = S_CLOSE_EOF;
                consume(s, used);
                return;
            }
            consume(s, used);                       /* data still in flight before the Close */
            continue;
        }
        if (s->state == S_OPEN) {
            fail(s, R_PROTOCOL, "unexpected frame, opcode %d", opcode);
            return;
        }
        if (opcode == 8) {
            fail(s, R_PROTOCOL, "Close %d instead of an echo",
                 len >= 2 ? (p[0] << 8 | p[1]) : 1005);
            return;
        }
        if (opcode != 2 || len != s->sent_len || memcmp(p, s->sent, len)) {
            fail(s, R_PROTOCOL, "wrong echo: opcode %d, %u bytes instead of %u", opcode, len,
                 s->sent_len);
            return;
        }
        consume(s, used);
        uint64_t rtt = now_ns() - s->t0;
        record_time(rtt);
        op_ok++;
        if (s->state == S_ECHO) { s->state = S_OPEN; op_done(s); return; }
        /* S_LAT: the next send is cmd_latency's */
        s->due += lat_period;
        s->state = S_LAT_WAIT;
        return;
    }
    if (r == -1) fail(s, R_PROTOCOL, "bad server frame header %02x %02x", s->buf[0], s->buf[1]);
}

/* The 101: status, Upgrade, Connection, Sec-WebSocket-Accept (RFC 6455 section 4.1, 4.2.2).
 * end points at the head's final CRLFCRLF, which lies at least one byte before the buffer's end:
 * that byte (maybe the start of a frame) is swapped for the NUL that http_header needs. */
static void on_head(sess *s, char *end) {
    size_t vl; const char *v;
    char saved = end[4];
    end[4] = 0;
    if (strncmp((char *)s->buf, "HTTP/1.1 101", 12) != 0) {
        fail(s, R_STATUS, "%.*s", (int)strcspn((char *)s->buf, "\r\n"), (char *)s->buf);
        return;
    }
    if (!(v = http_header((char *)s->buf, "Upgrade", &vl)) || !has_token(v, vl, "websocket")) {
        fail(s, R_ACCEPT, "no Upgrade: websocket"); return;
    }
    if (!(v = http_header((char *)s->buf, "Connection", &vl)) || !has_token(v, vl, "upgrade")) {
        fail(s, R_ACCEPT, "no Connection: upgrade"); return;
    }
    v = http_header((char *)s->buf, "Sec-WebSocket-Accept", &vl);
    if (!v || vl != 28 || memcmp(v, s->accept, 28)) { fail(s, R_ACCEPT, "wrong Accept"); return; }
    end[4] = saved;
    consume(s, (unsigned)(end + 4 - (char *)s->buf));
    record_time(now_ns() - s->t0);
    op_ok++;
    op_done(s);
    if (s->stall) {          /* out of the epoll set: not even a hang-up can wake us for it */
        s->state = S_STALLED; s->blen = 0;
        epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
        return;
    }
    s->state = S_OPEN;
    if (s->blen) on_frames(s);
}

static void on_readable(sess *s) {
    for (;;) {
        if (s->blen == RBUF) { fail(s, R_PROTOCOL, "more than %d bytes unread", RBUF); return; }
        ssize_t n = recv(s->fd, s->buf + s->blen, RBUF - s->blen, 0);
        if (n == 0) {
            if (s->state == S_CLOSE_EOF) {
                n_tcp_closed++;
                op_ok += s->close_code == 1000;
                kill_sess(s);
                op_done(s);
            }
            else if (s->state == S_CLOSING) fail(s, R_EOF, "TCP closed without a Close frame");
            else fail(s, R_EOF, "connection closed by the server (state %d)", s->state);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            fail(s, errno_reason(errno), "recv: %s", strerror(errno));
            return;
        }
        s->blen += (unsigned)n;
        if (s->state == S_HANDSHAKE) {
            char *end = memmem(s->buf, s->blen, "\r\n\r\n", 4);
            if (end) {
                if ((unsigned)(end - (char *)s->buf) + 4 >= RBUF) {
                    fail(s, R_STATUS, "response head longer than %d bytes", RBUF - 5);
                    return;
                }
                on_head(s, end);
                if (s->state != S_OPEN) return;
            }
            continue;
        }
        if (s->state == S_CLOSE_EOF) { s->blen = 0; continue; }   /* data after the Close */
        on_frames(s);
        if (s->state == S_DEAD) return;
    }
}

static void on_writable(sess *s, const char *path, const char *host) {
    int err = 0; socklen_t el = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) { fail(s, errno_reason(err), "connect: %s", strerror(err)); return; }
    unsigned char raw[16]; char key[25], req[512];
    for (int i = 0; i < 16; i += 8) { uint64_t r = rnd(); memcpy(raw + i, &r, 8); }
    base64_encode(raw, 16, key);
    ws_accept(key, 24, s->accept);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "User-Agent: fastgw-soak\r\n\r\n", path, host, key);
    ssize_t w = send(s->fd, req, (size_t)n, MSG_NOSIGNAL);
    if (w != n) {
        if (w < 0) fail(s, errno_reason(errno), "send upgrade: %s", strerror(errno));
        else fail(s, R_OTHER, "short write of the upgrade request");
        return;
    }
    s->state = S_HANDSHAKE;
    ev_set(s, EPOLLIN);
}

static void dispatch(struct epoll_event *e, const char *path, const char *host) {
    sess *s = e->data.ptr;
    if (s->state == S_CONNECTING) {
        if (e->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(s, path, host);
        return;
    }
    if (s->state == S_DEAD || s->state == S_STALLED) return;
    on_readable(s);
}

/* Run the event loop until the command's sessions are all done or the deadline passes. */
static void run_until(uint64_t deadline, const char *path, const char *host) {
    struct epoll_event evs[512];
    while (op_pending) {
        uint64_t t = now_ns();
        if (t >= deadline) return;
        int ms = (int)((deadline - t) / 1000000) + 1;
        int k = epoll_wait(ep, evs, 512, ms > 100 ? 100 : ms);
        if (k < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < k; i++) dispatch(&evs[i], path, host);
    }
}

static void expire_busy(group *g, const char *what) {
    for (unsigned i = 0; i < g->n; i++)
        if (g->s[i]->busy) fail(g->s[i], R_TIMEOUT, "no %s before the deadline", what);
}

static void op_begin(unsigned capacity) {
    op_pending = op_ok = op_ntimes = 0;
    memset(op_fail, 0, sizeof op_fail);
    free(op_times);
    op_times = malloc(sizeof *op_times * (capacity ? capacity : 1));
    if (!op_times) die("malloc");
    op_last = 0; n_close1000 = n_close_other = n_tcp_closed = 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentiles of op_times (nanoseconds), printed in the given unit. */
static void print_times(const char *prefix, double unit_ns) {
    if (!op_ntimes) return;
    qsort(op_times, op_ntimes, sizeof *op_times, cmp_u64);
    static const struct { const char *name; double q; } qs[] = {
        { "p50", .50 }, { "p90", .90 }, { "p99", .99 }, { "max", 1.0 } };
    for (unsigned i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        unsigned at = (unsigned)(qs[i].q * (op_ntimes - 1) + 0.5);
        printf("result %s_%s %.3f\n", prefix, qs[i].name, op_times[at] / unit_ns);
    }
}

static void op_report(void) {
    printf("result ok %u\n", op_ok);
    for (int r = 0; r < NREASONS; r++)
        if (op_fail[r]) printf("result fail_%s %u\nresult why_%s %s\n", REASON[r], op_fail[r],
                               REASON[r], op_why[r]);
}

static group *get_group(int g) {
    if (g < 0 || g >= NGROUPS) { fprintf(stderr, "bad group %d\n", g); exit(2); }
    return &groups[g];
}

static void cmd_open(int gi, unsigned n, unsigned conc, const char *path, double timeout,
                     int stall) {
    group *g = get_group(gi);
    if (g->n + n > g->cap) {
        g->cap = g->n + n;
        g->s = realloc(g->s, sizeof *g->s * g->cap);
        if (!g->s) die("realloc");
    }
    op_begin(n);
    uint64_t t_first = now_ns(), deadline = t_first + (uint64_t)(timeout * 1e9);
    unsigned started = 0, base = g->n;
    uint64_t t_issued = 0;                        /* when the last connect() was issued */
    struct epoll_event evs[512];
    while (started < n || op_pending) {
        while (started < n && op_pending < conc) {
            sess *s = calloc(1, sizeof *s);
            if (!s) die("calloc");
            s->idx = base + started; s->stall = stall; s->busy = 1; s->state = S_CONNECTING;
            g->s[g->n++] = s; started++; op_pending++;
            s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (s->fd < 0) { fail(s, R_OTHER, "socket: %s", strerror(errno)); continue; }
            sock_tune(s->fd);
            if (stall) {
                int rb = STALL_RCVBUF, mss = STALL_MSS;
                setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
                setsockopt(s->fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
            }
            s->t0 = now_ns();
            struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = s };
            epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
            if (connect(s->fd, (struct sockaddr *)&target, sizeof target) < 0 &&
                errno != EINPROGRESS)
                fail(s, errno_reason(errno), "connect: %s", strerror(errno));
            if (started == n) t_issued = now_ns();
        }
        uint64_t t = now_ns();
        if (t >= deadline) break;
        int k = epoll_wait(ep, evs, 512, 100);
        if (k < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < k; i++) dispatch(&evs[i], path, "soak.local");
    }
    for (unsigned i = base; i < g->n; i++)
        if (g->s[i]->busy) fail(g->s[i], R_TIMEOUT, "no 101 before the deadline");
    for (; started < n; started++) op_fail[R_TIMEOUT]++;   /* never started: out of time */
    printf("result elapsed_s %.6f\nresult connects_issued_s %.6f\n",
           op_last ? (op_last - t_first) / 1e9 : 0.0, t_issued ? (t_issued - t_first) / 1e9 : 0.0);
    print_times("hs_ms", 1e6);
    op_report();
}

static void cmd_echo(int gi, double timeout) {
    group *g = get_group(gi);
    op_begin(g->n);
    for (unsigned i = 0; i < g->n; i++) {
        sess *s = g->s[i];
        if (s->state == S_DEAD || s->state == S_STALLED) continue;
        if (s->state == S_OPEN) {
            s->busy = 1; op_pending++; s->state = S_ECHO;
            send_echo_probe(s, 16);
        }
    }
    /* sessions the server closed during the hold are found here: read them all first */
    run_until(now_ns() + (uint64_t)(timeout * 1e9), "", "");
    expire_busy(g, "echo");
    unsigned dead = 0;
    for (unsigned i = 0; i < g->n; i++) dead += g->s[i]->state == S_DEAD;
    printf("result sessions %u\nresult dead %u\n", g->n, dead);
    print_times("rtt_ms", 1e6);
    op_report();
}

/* Every session keeps at most one message in flight and sends one every `period_us` (0: as soon
 * as the previous echo is back), the sessions' schedules spread evenly over the period, so that
 * the healthy sessions load the proxy steadily instead of in bursts. */
static void cmd_latency(int gi, unsigned count, unsigned period_us, double timeout) {
    group *g = get_group(gi);
    op_begin(count);
    lat_budget = count; lat_sent = 0; lat_period = (uint64_t)period_us * 1000;
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(timeout * 1e9);
    unsigned m = 0;
    for (unsigned i = 0; i < g->n; i++) m += g->s[i]->state == S_OPEN;
    for (unsigned i = 0, j = 0; i < g->n; i++) {
        sess *s = g->s[i];
        if (s->state != S_OPEN) continue;
        s->busy = 1; op_pending++; s->state = S_LAT_WAIT;
        s->due = t0 + lat_period * j++ / m;
    }
    struct epoll_event evs[512];
    while (op_pending) {
        uint64_t t = now_ns(), next = deadline;
        if (t >= deadline) break;
        for (unsigned i = 0; i < g->n; i++) {
            sess *s = g->s[i];
            if (s->state != S_LAT_WAIT) continue;
            if (lat_sent >= lat_budget) { s->state = S_OPEN; op_done(s); continue; }
            if (s->due <= t) {
                lat_sent++;
                s->state = S_LAT;
                if (send_echo_probe(s, LAT_SIZE) < 0) continue;
            } else if (s->due < next) next = s->due;
        }
        if (!op_pending) break;
        uint64_t wait = next > t ? next - t : 0;         /* to the microsecond: no bursts */
        struct timespec ts = { (time_t)(wait / 1000000000), (long)(wait % 1000000000) };
        int k = epoll_pwait2(ep, evs, 512, &ts, NULL);
        if (k < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < k; i++) dispatch(&evs[i], "", "");
    }
    expire_busy(g, "echo");
    printf("result elapsed_s %.6f\n", (now_ns() - t0) / 1e9);
    print_times("lat_us", 1e3);
    op_report();
}

static void cmd_close(int gi, double timeout) {
    group *g = get_group(gi);
    op_begin(g->n);
    static const unsigned char code[2] = { 1000 >> 8, 1000 & 255 };
    unsigned asked = 0;
    for (unsigned i = 0; i < g->n; i++) {
        sess *s = g->s[i];
        if (s->state != S_OPEN) continue;
        s->busy = 1; op_pending++; s->state = S_CLOSING; asked++;
        send_frame(s, 8, code, 2);
    }
    run_until(now_ns() + (uint64_t)(timeout * 1e9), "", "");
    for (unsigned i = 0; i < g->n; i++) {
        sess *s = g->s[i];
        if (!s->busy) continue;
        if (s->state == S_CLOSE_EOF) { op_done(s); kill_sess(s); op_fail[R_TIMEOUT]++; }
        else fail(s, R_TIMEOUT, "no Close frame before the deadline");
    }
    if (op_fail[R_TIMEOUT] && !op_why[R_TIMEOUT][0])
        snprintf(op_why[R_TIMEOUT], sizeof op_why[0], "Close received, TCP not closed in time");
    printf("result asked %u\nresult close_1000 %u\nresult close_other %u\nresult tcp_closed %u\n",
           asked, n_close1000, n_close_other, n_tcp_closed);
    op_report();
}

/* Stalled sessions are not watched: whether the proxy kept them open is read from TCP_INFO. */
static void cmd_drop(int gi) {
    group *g = get_group(gi);
    unsigned established = 0;
    for (unsigned i = 0; i < g->n; i++) {
        sess *s = g->s[i];
        struct tcp_info ti; socklen_t tl = sizeof ti;
        if (s->fd >= 0 && getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0)
            established += ti.tcpi_state == 1;           /* TCP_ESTABLISHED */
        kill_sess(s);
        free(s);
    }
    printf("result sessions %u\nresult established %u\n", g->n, established);
    g->n = 0;
}

int main(int argc, char **argv) {
    int port = 0; const char *addr = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-a") && i + 1 < argc) addr = argv[++i];
        else { fprintf(stderr, "usage: wssoak -p PORT [-a ADDR]\n"); return 2; }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    rng ^= now_ns() ^ ((uint64_t)getpid() << 32);
    target.sin_family = AF_INET; target.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &target.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", addr);
        return 2;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    printf("READY %lu\n", (unsigned long)rl.rlim_cur); fflush(stdout);

    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16] = "", path[256] = "", flag[16] = "";
        int g = 0; unsigned n = 0, conc = 0; double timeout = 0;
        if (sscanf(line, "%15s", cmd) != 1) continue;
        if (!strcmp(cmd, "open") &&
            sscanf(line, "%*s %d %u %u %255s %lf %15s", &g, &n, &conc, path, &timeout, flag) >= 5)
            cmd_open(g, n, conc ? conc : 1, path, timeout, !strcmp(flag, "stall"));
        else if (!strcmp(cmd, "echo") && sscanf(line, "%*s %d %lf", &g, &timeout) == 2)
            cmd_echo(g, timeout);
        else if (!strcmp(cmd, "latency") &&
                 sscanf(line, "%*s %d %u %u %lf", &g, &n, &conc, &timeout) == 4)
            cmd_latency(g, n, conc, timeout);
        else if (!strcmp(cmd, "close") && sscanf(line, "%*s %d %lf", &g, &timeout) == 2)
            cmd_close(g, timeout);
        else if (!strcmp(cmd, "drop") && sscanf(line, "%*s %d", &g) == 1)
            cmd_drop(g);
        else { fprintf(stderr, "bad command: %s", line); return 2; }
        printf("done\n"); fflush(stdout);
    }
    return 0;
}
