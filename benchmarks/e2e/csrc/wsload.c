/* wsload.c -- the load generator of the fastgw end-to-end benchmarks.
 *
 * One single-threaded epoll process.  Every mode runs for WARMUP seconds, then counts for exactly
 * DURATION seconds (the window) and exits; at both window edges it samples /proc/stat and
 * /proc/PID/stat (+schedstat) of the pids given with -S and of itself, so that the harness gets
 * CPU times measured at the very same instants as the throughput.
 *
 * Modes
 *   ws    WebSocket echo: C connections, each keeps W messages of S payload bytes in flight (one
 *         binary frame per message).  Frames are built once, masked with a fixed non-zero key
 *         (RFC 6455 section 5.3) and re-sent from a prebuilt buffer: no per-message work on send.
 *         Echoes are parsed frame by frame (headers only; payload bytes are skipped unless
 *         verifying).  With W == 1 the round-trip time of every message is recorded (latency).
 *   hs    WebSocket handshakes: C concurrent slots, each loops: connect, upgrade request with a fresh
 *         Sec-WebSocket-Key, check the 101 and Sec-WebSocket-Accept, send Close 1000, wait for the
 *         server's Close, wait for the server to close TCP (section 7.1.1), close, repeat.
 *   http  HTTP/1.1 keep-alive GETs: C connections, one request in flight each; responses with
 *         Content-Length, chunked or close-delimited bodies; "Connection: close" -> reconnect.
 *
 * Usage: wsload MODE -p PORT [-a ADDR] [-c CONNS] [-w WINDOW] [-s SIZE] [-d SECONDS] [-W WARMUP]
 *               [-V 0|1|2] [-u PATH] [-H HOST] [-S PID,PID,...] [-B PAUSE_US] [-Z 0|1]
 *   -V 0: never verify echoed payloads; 1: verify during the warm-up only (default); 2: always.
 *   -B: batching pause (see batch_pause in common.h); 0 = off (default).
 *   -Z: zero-copy mode for large messages: frames are masked with an all-zero key (legal: the
 *       masking key is any 32-bit value, RFC 6455 section 5.3; proxies forward payloads untouched
 *       anyway), sent with sendfile(2) from a memfd holding the prebuilt frames, and, outside the
 *       verified warm-up, echoed payloads are discarded in the kernel with recv(MSG_TRUNC) after
 *       reading only the frame headers.  The echo backend then splices them (wsecho.c).
 * Output: "sample ..." and "result KEY VALUE" lines on stdout; "error ..." on stderr; exit 0 on
 * success, 3 on a protocol/verification error, 2 on a setup error.
 */
#include "common.h"

#define RBUF_SIZE (256 * 1024)
#define HEAD_MAX 8192

enum { M_WS, M_HS, M_HTTP };
enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_WAIT_EOF, C_HTTP };

typedef struct conn {
    int fd, state, ev_out;
    /* one-shot output: upgrade request, close frame, HTTP request */
    char obuf[1024]; size_t olen, ooff;
    /* ws stream output: bytes still to send out of the prebuilt frame buffer, offset in a frame */
    uint64_t tosend; size_t soff;
    /* response head accumulation */
    char head[HEAD_MAX + 1]; size_t hlen;
    char accept[32];
    /* ws frame parser */
    unsigned char fh[14]; unsigned fh_have, fh_need; int in_payload, opcode, fin; uint64_t remain;
    uint64_t msg_off; int in_msg; unsigned char ctrl[125]; unsigned ctrl_len;
    int inflight; uint64_t tsend; int big;
    /* http response parser */
    int body_mode; uint64_t body_left; int resp_close; int chunk_state; char chunk_line[64]; unsigned chunk_ll;
    int got_response_bytes;
} conn;

/* configuration */
static int mode, port, nconns = 64, window = 1, verify = 1; static unsigned pause_us;
static size_t msize = 64;
static double duration = 3.0, warmup = 1.0;
static const char *addr = "127.0.0.1", *path = "/bench", *hosthdr = "bench.local";
static int pids[64], npids;

/* state */
static int ep;
static conn *conns;
static unsigned char rbuf[RBUF_SIZE];
static unsigned char *sbuf, *payload;      /* prebuilt masked frames; expected (unmasked) payload */
static size_t framelen, sbuflen;
static unsigned char mkey[4] = { 0x37, 0xfa, 0x21, 0x3d };
static int zerocopy, memfd = -1;
static int counting, verifying, stopping;
static uint64_t t_start, t_win0, t_win1;
static uint64_t n_msgs, n_bytes, n_hs, n_resp, n_errors, n_reconnects, n_verified, key_counter;
static uint64_t *lat; static size_t nlat, latcap;
static struct sockaddr_in target;
static char http_req[512]; static size_t http_req_len;

static void fail(const char *msg, conn *c) {
    fprintf(stderr, "error: %s (connection %ld)\n", msg, c ? (long)(c - conns) : -1L);
    printf("result error %s\n", msg);
    fflush(stdout);
    exit(3);
}

/* ---------------------------------------------------------------- sampling */
static void sample(int idx) {
    char buf[8192];
    printf("sample %d t %llu\n", idx, (unsigned long long)now_ns());
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        while (fgets(buf, sizeof buf, f)) {
            if (strncmp(buf, "cpu", 3)) break;
            printf("sample %d stat %s", idx, buf);
        }
        fclose(f);
    }
    for (int i = 0; i <= npids; i++) {
        int pid = i < npids ? pids[i] : getpid();
        char fn[64]; unsigned long long ut = 0, st = 0, rt = 0; int ok = 0;
        snprintf(fn, sizeof fn, "/proc/%d/stat", pid);
        f = fopen(fn, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f); buf[n] = 0; fclose(f);
            char *p = strrchr(buf, ')');
            if (p) {   /* fields after the comm: state(3) ... utime(14) stime(15) */
                p += 2; int field = 3;
                while (*p && field < 14) { if (*p == ' ') field++; p++; }
                ok = sscanf(p, "%llu %llu", &ut, &st) == 2;
            }
        }
        snprintf(fn, sizeof fn, "/proc/%d/schedstat", pid);
        f = fopen(fn, "r");
        if (f) { if (fscanf(f, "%llu", &rt) != 1) rt = 0; fclose(f); }
        printf("sample %d pid %d %s %llu %llu %llu\n", idx, pid, i < npids ? "watched" : "self",
               ok ? ut : 0ull, ok ? st : 0ull, rt);
    }
    fflush(stdout);
}

/* ---------------------------------------------------------------- I/O helpers */
static void want_out(conn *c, int on) {
    if (c->ev_out == on) return;
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->ev_out = on;
}

static void conn_lost(conn *c, const char *why);
static void start_conn(conn *c);

/* Send pending one-shot bytes, then stream frames. Returns -1 if the connection was dropped. */
static int pump(conn *c) {
    while (c->olen > c->ooff) {
        ssize_t n = write(c->fd, c->obuf + c->ooff, c->olen - c->ooff);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) { want_out(c, 1); return 0; }
            conn_lost(c, "write failed"); return -1;
        }
        c->ooff += (size_t)n;
    }
    c->olen = c->ooff = 0;
    while (c->tosend) {
        size_t len = sbuflen - c->soff;
        if (len > c->tosend) len = (size_t)c->tosend;
        ssize_t n;
        if (memfd >= 0) { off_t off = (off_t)c->soff; n = sendfile(c->fd, memfd, &off, len); }
        else n = write(c->fd, sbuf + c->soff, len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) { want_out(c, 1); return 0; }
            conn_lost(c, "write failed"); return -1;
        }
        c->tosend -= (uint64_t)n;
        c->soff = (c->soff + (size_t)n) % framelen;
        if ((size_t)n < len) { want_out(c, 1); return 0; }
    }
    want_out(c, 0);
    return 0;
}

static void new_key(conn *c, char key[25]) {
    unsigned char raw[16];
    uint64_t a = ++key_counter * 0x9E3779B97F4A7C15ull, b = (uint64_t)(c - conns) ^ t_start;
    memcpy(raw, &a, 8); memcpy(raw + 8, &b, 8);
    base64_encode(raw, 16, key);
    ws_accept(key, 24, c->accept);
}

static void start_conn(conn *c) {
    memset(&c->fh_have, 0, sizeof *c - offsetof(conn, fh_have));
    c->olen = c->ooff = 0; c->tosend = 0; c->soff = 0; c->hlen = 0; c->ev_out = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    sock_tune(c->fd);
    if (connect(c->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "error: connect: %s\n", strerror(errno));
        printf("result error connect-failed\n"); fflush(stdout); exit(3);
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (mode == M_HTTP) {
        memcpy(c->obuf, http_req, http_req_len); c->olen = http_req_len; c->state = C_HTTP;
    } else {
        char key[25];
        new_key(c, key);
        c->olen = (size_t)snprintf(c->obuf, sizeof c->obuf,
            "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: fastgw-bench\r\n\r\n",
            path, hosthdr, key);
        c->state = C_HANDSHAKE;
    }
    pump(c);   /* on loopback the connection is usually up already; EAGAIN -> wait for EPOLLOUT */
}

static void conn_lost(conn *c, const char *why) {
    close(c->fd); c->fd = -1; c->state = C_IDLE;
    if (stopping) return;
    if (mode == M_WS) fail(why, c);
    if (counting) n_errors++;
    fprintf(stderr, "warning: %s (connection %ld)\n", why, (long)(c - conns));
    start_conn(c);
}

/* ---------------------------------------------------------------- WebSocket */
static void ws_send_close(conn *c) {
    unsigned char f[8] = { 0x88, 0x82, mkey[0], mkey[1], mkey[2], mkey[3], 1000 >> 8, 1000 & 255 };
    f[6] ^= mkey[0]; f[7] ^= mkey[1];
    memcpy(c->obuf + c->olen, f, 8); c->olen += 8;
    c->state = C_CLOSING;
}

static void on_message(conn *c, uint64_t now) {
    if (c->msg_off != msize) fail("echoed message has the wrong length", c);
    if (verifying) n_verified++;
    if (counting) {
        n_msgs++;
        if (window == 1) {
            if (nlat == latcap) { latcap = latcap ? 2 * latcap : 65536; lat = realloc(lat, latcap * sizeof *lat); if (!lat) die("realloc"); }
            lat[nlat++] = now - c->tsend;
        }
    }
    c->inflight--;
}

/* Parse server frames (must be unmasked). Returns -1 when the connection went away. */
static int ws_feed(conn *c, const unsigned char *p, size_t n, uint64_t now) {
    while (n) {
        /* fast path: whole small unfragmented binary echoes, counted without copying anything */
        if (!c->in_payload && c->fh_have == 0 && !c->in_msg && c->state == C_OPEN && !verifying) {
            while (n >= 2 && p[0] == 0x82 && p[1] < 126 && n >= 2u + p[1]) {
                unsigned l7 = p[1];
                c->msg_off = l7;
                if (counting) n_bytes += l7;
                on_message(c, now);
                p += 2 + l7; n -= 2 + l7;
            }
            if (!n) return 0;
        }
        if (!c->in_payload) {
            if (c->fh_have < 2) {
                size_t take = 2 - c->fh_have < n ? 2 - c->fh_have : n;
                memcpy(c->fh + c->fh_have, p, take); c->fh_have += take; p += take; n -= take;
                if (c->fh_have < 2) return 0;
                unsigned l7 = c->fh[1] & 127;
                if (c->fh[1] & 0x80) fail("server frame is masked (RFC 6455 5.1)", c);
                c->fh_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
            }
            if (c->fh_have < c->fh_need) {
                size_t take = c->fh_need - c->fh_have < n ? c->fh_need - c->fh_have : n;
                memcpy(c->fh + c->fh_have, p, take); c->fh_have += take; p += take; n -= take;
                if (c->fh_have < c->fh_need) return 0;
            }
            unsigned l7 = c->fh[1] & 127; uint64_t len = l7;
            if (l7 == 126) len = (uint64_t)c->fh[2] << 8 | c->fh[3];
            else if (l7 == 127) { len = 0; for (int i = 0; i < 8; i++) len = len << 8 | c->fh[2 + i]; }
            c->fin = c->fh[0] >> 7; c->opcode = c->fh[0] & 15; c->fh_have = 0;
            if (c->fh[0] & 0x70) fail("RSV bits set in a server frame", c);
            if (c->opcode == 1 || c->opcode == 2) {
                if (c->in_msg) fail("new data frame inside a fragmented message", c);
                if (c->opcode != 2) fail("echo of a binary message is not binary", c);
                if (c->state != C_OPEN) fail("data frame outside the open state", c);
                c->in_msg = 1; c->msg_off = 0;
            } else if (c->opcode == 0) {
                if (!c->in_msg) fail("continuation frame without a message", c);
            } else if (c->opcode == 8 || c->opcode == 9 || c->opcode == 10) {
                if (!c->fin || len > 125) fail("bad control frame", c);
                c->ctrl_len = 0;
            } else fail("reserved opcode", c);
            c->remain = len; c->in_payload = 1;
            if (c->opcode < 8) c->big = len >= 4096;
        }
        if (c->remain) {
            size_t take = c->remain < n ? (size_t)c->remain : n;
            if (c->opcode < 8) {
                if (c->msg_off + take > msize) fail("echoed message is too long", c);
                if (verifying && memcmp(p, payload + c->msg_off, take)) fail("echoed payload differs", c);
                c->msg_off += take;
                if (counting) n_bytes += take;
            } else { memcpy(c->ctrl + c->ctrl_len, p, take); c->ctrl_len += take; }
            c->remain -= take; p += take; n -= take;
            if (c->remain) return 0;
        }
        c->in_payload = 0;
        if (c->opcode < 8) {
            if (c->fin) { c->in_msg = 0; on_message(c, now); }
        } else if (c->opcode == 8) {
            if (c->state != C_CLOSING) fail("unexpected Close from the server", c);
            if (c->ctrl_len >= 2 && (c->ctrl[0] << 8 | c->ctrl[1]) != 1000) fail("Close reply is not 1000", c);
            if (n) fail("data after the Close frame", c);
            c->state = C_WAIT_EOF;
            return 0;
        }   /* ping/pong: ignored (the echo backend never pings) */
    }
    return 0;
}

/* ---------------------------------------------------------------- HTTP response parsing */
enum { B_NONE, B_LENGTH, B_CHUNKED, B_EOF };
enum { K_SIZE, K_DATA, K_DATA_CRLF, K_TRAILER };

static void http_done(conn *c) {
    if (counting) n_resp++;
    c->hlen = 0; c->body_mode = B_NONE; c->got_response_bytes = 0;
    if (c->resp_close || stopping) {
        close(c->fd); c->fd = -1; c->state = C_IDLE;
        if (!stopping) { if (counting) n_reconnects++; start_conn(c); }
        return;
    }
    memcpy(c->obuf, http_req, http_req_len); c->olen = http_req_len; c->ooff = 0;
    pump(c);
}

/* returns -1 if the connection was replaced */
static int http_feed(conn *c, const unsigned char *p, size_t n) {
    while (n) {
        c->got_response_bytes = 1;
        if (c->body_mode == B_NONE) {
            size_t room = HEAD_MAX - c->hlen, take = n < room ? n : room;
            size_t from = c->hlen > 3 ? c->hlen - 3 : 0;
            memcpy(c->head + c->hlen, p, take); c->hlen += take; c->head[c->hlen] = 0;
            char *end = memmem(c->head + from, c->hlen - from, "\r\n\r\n", 4);
            if (!end) { if (c->hlen == HEAD_MAX) fail("response head too large", c); return 0; }
            size_t headlen = (size_t)(end - c->head) + 4, used = headlen - (c->hlen - take);
            c->head[headlen] = 0; p += used; n -= used;
            if (strncmp(c->head, "HTTP/1.1 200 ", 13) && strncmp(c->head, "HTTP/1.0 200 ", 13)) {
                char *eol = strstr(c->head, "\r\n"); if (eol) *eol = 0;
                fprintf(stderr, "error: status line: %s\n", c->head);
                fail("HTTP status is not 200", c);
            }
            size_t vl; const char *v;
            c->resp_close = strncmp(c->head, "HTTP/1.0", 8) == 0;
            if ((v = http_header(c->head, "Connection", &vl))) {
                if (has_token(v, vl, "close")) c->resp_close = 1;
                else if (has_token(v, vl, "keep-alive")) c->resp_close = 0;
            }
            if ((v = http_header(c->head, "Transfer-Encoding", &vl)) && has_token(v, vl, "chunked")) {
                c->body_mode = B_CHUNKED; c->chunk_state = K_SIZE; c->chunk_ll = 0;
            } else if ((v = http_header(c->head, "Content-Length", &vl))) {
                c->body_mode = B_LENGTH; c->body_left = strtoull(v, NULL, 10);
            } else { c->body_mode = B_EOF; c->resp_close = 1; }
            if (c->body_mode == B_LENGTH && c->body_left == 0) { if (n) fail("bytes after the response", c); http_done(c); return -1; }
            continue;
        }
        if (c->body_mode == B_LENGTH) {
            size_t take = c->body_left < n ? (size_t)c->body_left : n;
            c->body_left -= take; p += take; n -= take;
            if (!c->body_left) { if (n) fail("bytes after the response", c); http_done(c); return -1; }
        } else if (c->body_mode == B_EOF) {
            return 0;   /* everything up to EOF is body */
        } else {        /* chunked (RFC 9112 section 7.1) */
            if (c->chunk_state == K_DATA) {
                size_t take = c->body_left < n ? (size_t)c->body_left : n;
                c->body_left -= take; p += take; n -= take;
                if (!c->body_left) { c->chunk_state = K_DATA_CRLF; c->chunk_ll = 0; }
                continue;
            }
            /* line-oriented states */
            unsigned char ch = *p++; n--;
            if (ch != '\n') { if (c->chunk_ll < sizeof c->chunk_line - 1) c->chunk_line[c->chunk_ll++] = (char)ch; continue; }
            c->chunk_line[c->chunk_ll] = 0;
            if (c->chunk_ll && c->chunk_line[c->chunk_ll - 1] == '\r') c->chunk_line[--c->chunk_ll] = 0;
            if (c->chunk_state == K_SIZE) {
                c->body_left = strtoull(c->chunk_line, NULL, 16);
                c->chunk_state = c->body_left ? K_DATA : K_TRAILER;
            } else if (c->chunk_state == K_DATA_CRLF) {
                c->chunk_state = K_SIZE;
            } else if (c->chunk_ll == 0) {   /* empty trailer line: end of the message */
                if (n) fail("bytes after the response", c);
                http_done(c); return -1;
            }
            c->chunk_ll = 0;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- events */
static void refill(conn *c, uint64_t now) {
    if (stopping || c->state != C_OPEN) return;
    int k = window - c->inflight;
    if (k <= 0) return;
    c->tosend += (uint64_t)k * framelen; c->inflight = window;
    c->tsend = now;
}

/* Payload bytes discarded in the kernel (zero-copy mode): what ws_feed does with payload bytes. */
static void ws_skip(conn *c, size_t n, uint64_t now) {
    if (c->msg_off + n > msize) fail("echoed message is too long", c);
    c->msg_off += n; c->remain -= n;
    if (counting) n_bytes += n;
    if (!c->remain) { c->in_payload = 0; if (c->fin) { c->in_msg = 0; on_message(c, now); } }
}

static void on_readable(conn *c) {
    for (int round = 0; round < 4; round++) {
        int zc = zerocopy && !verifying && c->state == C_OPEN;
        int discard = zc && c->in_payload && c->opcode < 8 && c->remain >= 4096;
        size_t want = discard ? (size_t)c->remain : zc && c->big && !c->in_payload ? 14 : sizeof rbuf;
        ssize_t n = discard ? recv(c->fd, NULL, want, MSG_TRUNC | MSG_DONTWAIT) : read(c->fd, rbuf, want);
        uint64_t now = window == 1 && mode == M_WS ? now_ns() : 0;
        if (n == 0) {
            if (c->state == C_WAIT_EOF) {              /* a complete handshake cycle */
                close(c->fd); c->fd = -1; c->state = C_IDLE;
                if (counting) n_hs++;
                if (!stopping) start_conn(c);
                return;
            }
            if (c->state == C_HTTP && !c->got_response_bytes) {   /* keep-alive connection closed by peer */
                close(c->fd); c->fd = -1; c->state = C_IDLE;
                if (!stopping) { if (counting) n_reconnects++; start_conn(c); }
                return;
            }
            if (c->state == C_HTTP && c->body_mode == B_EOF) { http_done(c); return; }
            conn_lost(c, "connection closed by the peer");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            conn_lost(c, "read failed"); return;
        }
        round_bytes += (uint64_t)n;
        if (discard) {
            ws_skip(c, (size_t)n, now);
            refill(c, now);
            if (pump(c) < 0) return;
            if ((size_t)n < want) break;
            continue;
        }
        const unsigned char *p = rbuf; size_t len = (size_t)n;
        if (c->state == C_HTTP) { if (http_feed(c, p, len) < 0) return; continue; }
        if (c->state == C_HANDSHAKE) {
            size_t room = HEAD_MAX - c->hlen, take = len < room ? len : room;
            size_t from = c->hlen > 3 ? c->hlen - 3 : 0;
            memcpy(c->head + c->hlen, p, take); c->hlen += take; c->head[c->hlen] = 0;
            char *end = memmem(c->head + from, c->hlen - from, "\r\n\r\n", 4);
            if (!end) { if (c->hlen == HEAD_MAX) fail("101 response head too large", c); continue; }
            size_t headlen = (size_t)(end - c->head) + 4, used = headlen - (c->hlen - take);
            c->head[headlen] = 0; p += used; len -= used;
            if (strncmp(c->head, "HTTP/1.1 101", 12)) {
                char *eol = strstr(c->head, "\r\n"); if (eol) *eol = 0;
                fprintf(stderr, "error: status line: %s\n", c->head);
                fail("upgrade was not answered with 101", c);
            }
            size_t vl; const char *v = http_header(c->head, "Sec-WebSocket-Accept", &vl);
            if (!v || vl != 28 || memcmp(v, c->accept, 28)) fail("wrong Sec-WebSocket-Accept", c);
            if (mode == M_HS) ws_send_close(c);
            else { c->state = C_OPEN; refill(c, now ? now : now_ns()); }
            if (len && ws_feed(c, p, len, now) < 0) return;
            if (pump(c) < 0) return;
            continue;
        }
        if (ws_feed(c, p, len, now) < 0) return;
        if (c->state == C_WAIT_EOF) continue;    /* the EOF often follows at once */
        refill(c, now);
        if (pump(c) < 0) return;
        if ((size_t)n < want) break;
    }
}

static double parse_d(const char *s) { return strtod(s, NULL); }

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b; return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) goto usage;
    if (!strcmp(argv[1], "ws")) mode = M_WS;
    else if (!strcmp(argv[1], "hs")) mode = M_HS;
    else if (!strcmp(argv[1], "http")) mode = M_HTTP;
    else goto usage;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        i++;
        if (!strcmp(o, "-p")) port = atoi(v);
        else if (!strcmp(o, "-a")) addr = v;
        else if (!strcmp(o, "-c")) nconns = atoi(v);
        else if (!strcmp(o, "-w")) window = atoi(v);
        else if (!strcmp(o, "-s")) msize = strtoull(v, NULL, 10);
        else if (!strcmp(o, "-d")) duration = parse_d(v);
        else if (!strcmp(o, "-W")) warmup = parse_d(v);
        else if (!strcmp(o, "-V")) verify = atoi(v);
        else if (!strcmp(o, "-B")) pause_us = (unsigned)atoi(v);
        else if (!strcmp(o, "-Z")) zerocopy = atoi(v);
        else if (!strcmp(o, "-u")) path = v;
        else if (!strcmp(o, "-H")) hosthdr = v;
        else if (!strcmp(o, "-S")) {
            char *s = strdup(v), *tok, *save;
            for (tok = strtok_r(s, ",", &save); tok && npids < 64; tok = strtok_r(NULL, ",", &save)) pids[npids++] = atoi(tok);
        } else goto usage;
    }
    if (!port || nconns < 1 || window < 1 || duration <= 0 || warmup < 0) goto usage;
    signal(SIGPIPE, SIG_IGN);
    target.sin_family = AF_INET; target.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &target.sin_addr) != 1) goto usage;

    if (zerocopy) memset(mkey, 0, sizeof mkey);
    /* prebuilt frames: enough copies for at least 256 KiB per write, at least one */
    payload = malloc(msize ? msize : 1);
    for (size_t i = 0; i < msize; i++) payload[i] = (unsigned char)(i * 131 + 7 + (i >> 8));
    {
        unsigned char h[14]; size_t hl;
        h[0] = 0x82;
        if (msize < 126) { h[1] = 0x80 | (unsigned char)msize; hl = 2; }
        else if (msize < 65536) { h[1] = 0x80 | 126; h[2] = msize >> 8; h[3] = msize & 255; hl = 4; }
        else { h[1] = 0x80 | 127; for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)msize >> (56 - 8 * i)); hl = 10; }
        memcpy(h + hl, mkey, 4); hl += 4;
        framelen = hl + msize;
        size_t copies = (256 * 1024 + framelen - 1) / framelen;
        if (copies > (size_t)window) copies = (size_t)window;
        if (copies < 1) copies = 1;
        sbuflen = copies * framelen;
        sbuf = malloc(sbuflen);
        for (size_t k = 0; k < copies; k++) {
            memcpy(sbuf + k * framelen, h, hl);
            ws_unmask_copy(sbuf + k * framelen + hl, payload, msize, mkey, 0);   /* masking == unmasking */
        }
    }
    if (zerocopy && framelen >= 4096) {     /* send the prebuilt frames with sendfile(2) */
        memfd = memfd_create("wsload-frames", MFD_CLOEXEC);
        if (memfd < 0) die("memfd_create");
        for (size_t off = 0; off < sbuflen;) {
            ssize_t w = write(memfd, sbuf + off, sbuflen - off);
            if (w <= 0) die("write memfd");
            off += (size_t)w;
        }
    }
    http_req_len = (size_t)snprintf(http_req, sizeof http_req,
        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fastgw-bench\r\nAccept: */*\r\n\r\n", path, hosthdr);

    ep = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)nconns, sizeof *conns);
    t_start = now_ns();
    t_win0 = t_start + (uint64_t)(warmup * 1e9);
    t_win1 = t_win0 + (uint64_t)(duration * 1e9);
    verifying = verify >= 1;
    for (int i = 0; i < nconns; i++) start_conn(&conns[i]);
    if (warmup == 0) { counting = 1; verifying = verify >= 2; sample(0); t_win0 = now_ns(); t_win1 = t_win0 + (uint64_t)(duration * 1e9); }

    struct epoll_event evs[512];
    for (;;) {
        uint64_t now = now_ns();
        if (!counting && now >= t_win0) {
            int open = 0;
            for (int i = 0; i < nconns; i++) open += conns[i].state == C_OPEN;
            sample(0);
            t_win0 = now_ns(); t_win1 = t_win0 + (uint64_t)(duration * 1e9);
            counting = 1; verifying = verify >= 2;
            printf("result conns_open_at_window_start %d\n", open);
        }
        if (counting && now >= t_win1) break;
        uint64_t next = counting ? t_win1 : t_win0;
        int tmo = (int)((next - now) / 1000000) + 1;
        if (tmo > 100) tmo = 100;
        batch_pause(pause_us);
        int k = epoll_wait(ep, evs, 512, tmo);
        if (k < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < k; i++) {
            conn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) { if (pump(c) < 0) continue; }
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
        }
    }
    uint64_t tend = now_ns();
    sample(1);
    counting = 0; stopping = 1;
    double win = (double)(tend - t_win0) / 1e9;
    printf("result window_s %.6f\n", win);
    printf("result messages %llu\n", (unsigned long long)n_msgs);
    printf("result payload_bytes %llu\n", (unsigned long long)n_bytes);
    printf("result handshakes %llu\n", (unsigned long long)n_hs);
    printf("result responses %llu\n", (unsigned long long)n_resp);
    printf("result errors %llu\n", (unsigned long long)n_errors);
    printf("result reconnects %llu\n", (unsigned long long)n_reconnects);
    printf("result verified_messages %llu\n", (unsigned long long)n_verified);
    if (nlat) {
        qsort(lat, nlat, sizeof *lat, cmp_u64);
        double sum = 0; for (size_t i = 0; i < nlat; i++) sum += (double)lat[i];
#define PCT(q) ((double)lat[(size_t)((q) * (double)(nlat - 1) + 0.5)] / 1e3)
        printf("result lat_count %zu\n", nlat);
        printf("result lat_mean_us %.3f\n", sum / (double)nlat / 1e3);
        printf("result lat_p50_us %.3f\nresult lat_p90_us %.3f\nresult lat_p99_us %.3f\nresult lat_p999_us %.3f\n",
               PCT(0.50), PCT(0.90), PCT(0.99), PCT(0.999));
        printf("result lat_max_us %.3f\n", (double)lat[nlat - 1] / 1e3);
    }
    fflush(stdout);
    return 0;
usage:
    fprintf(stderr, "usage: wsload ws|hs|http -p PORT [-a ADDR] [-c CONNS] [-w WINDOW] [-s SIZE] [-d SECONDS]\n"
                    "              [-W WARMUP] [-V 0|1|2] [-u PATH] [-H HOST] [-S PID,...] [-B PAUSE_US] [-Z 0|1]\n");
    return 2;
}
