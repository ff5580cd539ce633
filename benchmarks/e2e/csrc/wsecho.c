/* wsecho.c -- the echo backend of the fastgw end-to-end benchmarks.
 *
 * One single-threaded epoll process, one listening port, two protocols:
 *  - HTTP/1.1 keep-alive: every request (GET, HEAD or with a Content-Length body) gets a fixed
 *    small 200 response with Content-Length; pipelined requests are answered in order;
 *    "Connection: close" and HTTP/1.0 requests close after the response.
 *  - WebSocket (RFC 6455): a GET with "Upgrade: websocket" and a Sec-WebSocket-Key gets a 101 with
 *    Sec-WebSocket-Accept; then every data frame (text, binary, continuation) is echoed as a frame
 *    with the same FIN/opcode, unmasked (servers must not mask, section 5.1), streamed as it arrives
 *    (a 1 MiB frame is never buffered whole); pings get pongs; a Close gets a Close with the same
 *    status code, and then the server closes the TCP connection first (section 7.1.1).
 *    Frames from the client must be masked and carry no RSV bits (no extension is negotiated);
 *    otherwise the backend answers Close 1002 and hangs up.
 *    Zero-copy path: the payload of a large data frame (>= SPLICE_MIN bytes) whose mask key is
 *    all zeros (legal; unmasking is then the identity) is moved socket -> pipe -> socket with
 *    splice(2) instead of read + unmask + write, and while such frames keep coming the backend
 *    reads only frame headers.  The load generator uses zero keys for the large-message scenarios
 *    so that the backend's CPU cost per byte stays far below the proxy's.
 *
 * Usage: wsecho -p PORT [-b BIND_ADDR] [-B PAUSE_US]    prints "READY <port>" once listening.
 *   -B: batching pause (see batch_pause in common.h); 0 = off (default).
 */
#include "common.h"

#define RBUF_SIZE (256 * 1024)
#define OUT_HIGH (4u << 20)        /* stop reading a connection whose output backlog exceeds this */
#define HEAD_MAX 16384
#define SPLICE_MIN (16 * 1024)     /* zero-key data frames at least this large are spliced */
#define PIPE_WANT (1 << 20)

enum { S_HTTP, S_WS, S_DONE };

typedef struct conn {
    int fd, state, reading, writing, close_after_flush;
    /* HTTP request head accumulation, body skipping */
    char head[HEAD_MAX + 1]; size_t hlen; uint64_t body_left;
    /* WebSocket frame parser */
    unsigned char fh[14]; unsigned fh_have, fh_need;
    int in_payload, opcode, fin; uint64_t remain; unsigned char key[4]; unsigned phase;
    unsigned char ctrl[125]; unsigned ctrl_len;
    /* output */
    unsigned char *out; size_t olen, ooff, ocap;
    /* zero-copy echo of zero-key payloads: the rest of the current frame goes through a pipe */
    int splicing, big, pipe_r, pipe_w; size_t pipe_len, pipe_cap;
} conn;

static int ep;
static unsigned char rbuf[RBUF_SIZE];
static const char HTTP_BODY[] = "Hello, world\n";
static char http_resp[256], http_resp_close[256];
static size_t http_resp_len, http_resp_close_len;

static void out_reserve(conn *c, size_t n) {
    if (c->ooff && c->ooff == c->olen) c->ooff = c->olen = 0;
    if (c->olen + n <= c->ocap) return;
    if (c->ooff) { memmove(c->out, c->out + c->ooff, c->olen - c->ooff); c->olen -= c->ooff; c->ooff = 0; }
    if (c->olen + n <= c->ocap) return;
    size_t cap = c->ocap ? c->ocap : 65536;
    while (cap < c->olen + n) cap *= 2;
    c->out = realloc(c->out, cap);
    if (!c->out) die("realloc");
    c->ocap = cap;
}

static void out_put(conn *c, const void *p, size_t n) {
    out_reserve(c, n); memcpy(c->out + c->olen, p, n); c->olen += n;
}

/* Closed connections are kept on a free list with their output buffers: no malloc, memset or
 * page fault per connection in the handshake scenario. */
static conn *free_conns;

static conn *conn_new(int fd) {
    conn *c = free_conns;
    if (c) {
        memcpy(&free_conns, c->head, sizeof free_conns);      /* the free-list link */
        unsigned char *out = c->out; size_t ocap = c->ocap;
        memset(c, 0, offsetof(conn, head));
        memset(&c->hlen, 0, sizeof *c - offsetof(conn, hlen));
        c->out = out; c->ocap = ocap;
    } else {
        c = calloc(1, sizeof *c);
        if (!c) die("calloc");
    }
    c->fd = fd; c->state = S_HTTP; c->reading = 1; c->pipe_r = c->pipe_w = -1;
    return c;
}

static void conn_close(conn *c) {
    close(c->fd);                   /* also removes it from the epoll set: no EPOLL_CTL_DEL needed */
    c->fd = -1;
    if (c->pipe_r >= 0) { close(c->pipe_r); close(c->pipe_w); c->pipe_r = c->pipe_w = -1; }
    memcpy(c->head, &free_conns, sizeof free_conns);
    free_conns = c;
}

static void set_events(conn *c) {
    int want_out = c->olen > c->ooff || (c->splicing && c->pipe_len);
    int want_in = c->state != S_DONE && (c->olen - c->ooff) < OUT_HIGH &&
                  (!c->splicing || (c->olen == c->ooff && c->remain && c->pipe_len < c->pipe_cap));
    if (want_out == c->writing && want_in == c->reading) return;
    struct epoll_event ev = { .events = (want_in ? EPOLLIN : 0) | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->writing = want_out; c->reading = want_in;
}

/* Write what is pending. Returns -1 if the connection was closed. */
static int flush(conn *c) {
    while (c->olen > c->ooff) {
        ssize_t n = write(c->fd, c->out + c->ooff, c->olen - c->ooff);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            conn_close(c); return -1;
        }
        c->ooff += (size_t)n;
    }
    if (c->olen == c->ooff) {
        c->olen = c->ooff = 0;
        if (c->close_after_flush) { conn_close(c); return -1; }
    }
    set_events(c);
    return 0;
}

static void ws_protocol_error(conn *c) {
    unsigned char f[4] = { 0x88, 2, 1002 >> 8, 1002 & 255 };
    out_put(c, f, 4);
    c->state = S_DONE; c->close_after_flush = 1;
}

/* Parse and echo WebSocket data; streaming, any split of the byte stream. */
static void ws_feed(conn *c, const unsigned char *p, size_t n) {
    while (n && c->state == S_WS) {
        /* fast path: whole small data frames at the start of the input, echoed straight into the
         * output buffer (the echo of n input bytes is never longer than n: no mask key) */
        if (!c->in_payload && c->fh_have == 0 && n >= 6) {
            out_reserve(c, n);
            unsigned char *o = c->out + c->olen;
            while (n >= 6) {
                unsigned b0 = p[0], b1 = p[1], l7 = b1 & 127;
                if (l7 >= 126 || (b1 & 0x80) == 0 || (b0 & 0x7c) || (b0 & 3) == 3 || n < 6 + l7) break;
                o[0] = (unsigned char)b0; o[1] = (unsigned char)l7;
                ws_unmask_copy(o + 2, p + 6, l7, p + 2, 0);
                o += 2 + l7; p += 6 + l7; n -= 6 + l7;
            }
            c->olen = (size_t)(o - c->out);
            if (!n) return;
        }
        if (!c->in_payload) {
            if (c->fh_have < 2) {
                size_t take = 2 - c->fh_have < n ? 2 - c->fh_have : n;
                memcpy(c->fh + c->fh_have, p, take); c->fh_have += take; p += take; n -= take;
                if (c->fh_have < 2) return;
                unsigned l7 = c->fh[1] & 127;
                c->fh_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->fh[1] & 0x80) ? 4 : 0);
            }
            if (c->fh_have < c->fh_need) {
                size_t take = c->fh_need - c->fh_have < n ? c->fh_need - c->fh_have : n;
                memcpy(c->fh + c->fh_have, p, take); c->fh_have += take; p += take; n -= take;
                if (c->fh_have < c->fh_need) return;
            }
            /* complete header */
            unsigned b0 = c->fh[0], b1 = c->fh[1], l7 = b1 & 127, off = 2;
            uint64_t len = l7;
            if (l7 == 126) { len = (uint64_t)c->fh[2] << 8 | c->fh[3]; off = 4; }
            else if (l7 == 127) { len = 0; for (int i = 0; i < 8; i++) len = len << 8 | c->fh[2 + i]; off = 10; }
            c->fin = b0 >> 7; c->opcode = b0 & 15;
            if (!(b1 & 0x80) || (b0 & 0x70) || (c->opcode >= 3 && c->opcode <= 7) || c->opcode > 10 ||
                (c->opcode >= 8 && (!c->fin || len > 125))) { ws_protocol_error(c); return; }
            memcpy(c->key, c->fh + off, 4);
            c->remain = len; c->phase = 0; c->fh_have = 0; c->in_payload = 1; c->ctrl_len = 0;
            c->big = c->opcode < 8 && len >= SPLICE_MIN && !(c->key[0] | c->key[1] | c->key[2] | c->key[3]);
            if (c->opcode < 8) {            /* echo the header now, unmasked, payload follows */
                unsigned char h[10]; unsigned hl;
                h[0] = (unsigned char)b0;
                if (len < 126) { h[1] = (unsigned char)len; hl = 2; }
                else if (len < 65536) { h[1] = 126; h[2] = len >> 8; h[3] = len & 255; hl = 4; }
                else { h[1] = 127; for (int i = 0; i < 8; i++) h[2 + i] = len >> (56 - 8 * i); hl = 10; }
                out_put(c, h, hl);
            }
        }
        if (c->remain) {
            size_t take = c->remain < n ? c->remain : n;
            if (c->opcode < 8) {
                out_reserve(c, take);
                ws_unmask_copy(c->out + c->olen, p, take, c->key, c->phase);
                c->olen += take;
            } else {
                ws_unmask_copy(c->ctrl + c->ctrl_len, p, take, c->key, c->phase);
                c->ctrl_len += take;
            }
            c->phase = (c->phase + take) & 3; c->remain -= take; p += take; n -= take;
            if (c->remain) {
                if (c->big) c->splicing = 1;     /* the rest of this payload: splice (service()) */
                return;
            }
        }
        /* frame complete */
        c->in_payload = 0;
        if (c->opcode == 9) {               /* ping -> pong with the same payload (5.5.3) */
            unsigned char h[2] = { 0x8A, (unsigned char)c->ctrl_len };
            out_put(c, h, 2); out_put(c, c->ctrl, c->ctrl_len);
        } else if (c->opcode == 8) {        /* close -> echo the status code, then hang up (5.5.1) */
            if (c->ctrl_len >= 2) {
                unsigned code = (unsigned)c->ctrl[0] << 8 | c->ctrl[1];
                unsigned char f[4] = { 0x88, 2, (unsigned char)(code >> 8), (unsigned char)code };
                out_put(c, f, 4);
            } else {
                unsigned char f[2] = { 0x88, 0 };
                out_put(c, f, 2);
            }
            c->state = S_DONE; c->close_after_flush = 1;
        }
    }
}

/* One complete request head is in c->head (NUL-terminated, ends with CRLFCRLF). */
static void http_request(conn *c, const unsigned char **rest, size_t *restn) {
    size_t vl; const char *v;
    const char *eol = strstr(c->head, "\r\n");
    int http10 = eol - c->head >= 9 && memcmp(eol - 9, " HTTP/1.0", 9) == 0;
    int close = http10;
    if ((v = http_header(c->head, "Connection", &vl))) {
        if (has_token(v, vl, "close")) close = 1;
        if (http10 && has_token(v, vl, "keep-alive")) close = 0;
    }
    const char *up = http_header(c->head, "Upgrade", &vl);
    size_t kl; const char *key = http_header(c->head, "Sec-WebSocket-Key", &kl);
    if (up && has_token(up, vl, "websocket") && key && strncmp(c->head, "GET ", 4) == 0) {
        char acc[29], resp[256];
        ws_accept(key, kl, acc);
        int rl = snprintf(resp, sizeof resp,
                          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
        out_put(c, resp, (size_t)rl);
        c->state = S_WS; c->hlen = 0; c->fh_have = 0; c->in_payload = 0;
        if (*restn) { ws_feed(c, *rest, *restn); *restn = 0; }
        return;
    }
    if (http_header(c->head, "Transfer-Encoding", &vl)) {   /* chunked request bodies: not needed here */
        static const char r[] = "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        out_put(c, r, sizeof r - 1); c->state = S_DONE; c->close_after_flush = 1; return;
    }
    if ((v = http_header(c->head, "Content-Length", &vl))) c->body_left = strtoull(v, NULL, 10);
    if (close) { out_put(c, http_resp_close, http_resp_close_len); c->state = S_DONE; c->close_after_flush = 1; }
    else out_put(c, http_resp, http_resp_len);
    c->hlen = 0;
}

static void http_feed(conn *c, const unsigned char *p, size_t n) {
    while (n && c->state == S_HTTP) {
        if (c->body_left) {
            size_t take = c->body_left < n ? c->body_left : n;
            c->body_left -= take; p += take; n -= take;
            continue;
        }
        /* accumulate the head; search for the end only in the new bytes (plus 3 before) */
        size_t room = HEAD_MAX - c->hlen, take = n < room ? n : room;
        size_t from = c->hlen > 3 ? c->hlen - 3 : 0;
        memcpy(c->head + c->hlen, p, take); c->hlen += take; c->head[c->hlen] = 0;
        char *end = memmem(c->head + from, c->hlen - from, "\r\n\r\n", 4);
        if (!end) {
            if (c->hlen == HEAD_MAX) {
                static const char r[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                out_put(c, r, sizeof r - 1); c->state = S_DONE; c->close_after_flush = 1;
            }
            return;
        }
        size_t headlen = (size_t)(end - c->head) + 4;
        size_t used = headlen - (c->hlen - take);       /* bytes of this chunk that belong to the head */
        c->head[headlen] = 0;
        p += used; n -= used;
        http_request(c, &p, &n);
    }
}

static int ensure_pipe(conn *c) {
    if (c->pipe_r >= 0) return 0;
    int pfd[2];
    if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
    fcntl(pfd[1], F_SETPIPE_SZ, PIPE_WANT);            /* may be capped by fs.pipe-max-size */
    int sz = fcntl(pfd[1], F_GETPIPE_SZ);
    c->pipe_r = pfd[0]; c->pipe_w = pfd[1]; c->pipe_cap = sz > 0 ? (size_t)sz : 65536;
    return 0;
}

/* Move the rest of a zero-key payload socket -> pipe -> socket. Returns -1 if the connection was
 * closed; otherwise c->splicing is 0 once the frame is complete. */
static int splice_step(conn *c) {
    for (;;) {
        int progress = 0;
        if (c->pipe_len) {
            ssize_t m = splice(c->pipe_r, NULL, c->fd, NULL, c->pipe_len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (m > 0) { c->pipe_len -= (size_t)m; progress = 1; }
            else if (m < 0 && errno != EAGAIN && errno != EINTR) { conn_close(c); return -1; }
        }
        if (c->remain && c->pipe_len < c->pipe_cap) {
            size_t want = c->pipe_cap - c->pipe_len;
            if (want > c->remain) want = (size_t)c->remain;
            ssize_t n = splice(c->fd, NULL, c->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) { c->pipe_len += (size_t)n; c->remain -= (uint64_t)n; round_bytes += (uint64_t)n; progress = 1; }
            else if (n == 0) { conn_close(c); return -1; }
            else if (errno != EAGAIN && errno != EINTR) { conn_close(c); return -1; }
        }
        if (!c->remain && !c->pipe_len) { c->splicing = 0; c->in_payload = 0; return 0; }
        if (!progress) return 0;
    }
}

/* Do whatever the connection can do now: read and echo, splice, write. */
static void service(conn *c) {
    for (int round = 0; round < 4 && c->state != S_DONE; round++) {
        if (c->splicing) {
            if (c->olen > c->ooff) {        /* the echoed header must leave before the payload */
                if (flush(c) < 0) return;
                if (c->olen > c->ooff) return;
            }
            if (ensure_pipe(c) < 0) { conn_close(c); return; }
            if (splice_step(c) < 0) return;
            if (c->splicing) break;         /* blocked: wait for the next event */
            continue;
        }
        if (c->olen - c->ooff >= OUT_HIGH) break;
        /* while large zero-key frames keep coming, read headers only (the payload is spliced) */
        size_t want = c->big && c->state == S_WS ? 14 : sizeof rbuf;
        ssize_t n = read(c->fd, rbuf, want);
        if (n == 0) { conn_close(c); return; }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            conn_close(c); return;
        }
        round_bytes += (uint64_t)n;
        if (c->state == S_HTTP) http_feed(c, rbuf, (size_t)n);
        else if (c->state == S_WS) ws_feed(c, rbuf, (size_t)n);
        if (c->splicing) continue;
        if ((size_t)n < want) break;
    }
    flush(c);
}

int main(int argc, char **argv) {
    int port = 0; const char *bind_addr = "127.0.0.1"; unsigned pause_us = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-b") && i + 1 < argc) bind_addr = argv[++i];
        else if (!strcmp(argv[i], "-B") && i + 1 < argc) pause_us = (unsigned)atoi(argv[++i]);
        else { fprintf(stderr, "usage: wsecho -p PORT [-b BIND_ADDR] [-B PAUSE_US]\n"); return 2; }
    }
    signal(SIGPIPE, SIG_IGN);
    http_resp_len = (size_t)snprintf(http_resp, sizeof http_resp,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s", sizeof HTTP_BODY - 1, HTTP_BODY);
    http_resp_close_len = (size_t)snprintf(http_resp_close, sizeof http_resp_close,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
        sizeof HTTP_BODY - 1, HTTP_BODY);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* wake up for a connection only once its request has arrived: one wake-up instead of two */
    int defer = 1;
    setsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", bind_addr); return 2; }
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    ep = epoll_create1(0);
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("READY %d\n", ntohs(sa.sin_port)); fflush(stdout);

    struct epoll_event evs[256];
    for (;;) {
        batch_pause(pause_us);
        int k = epoll_wait(ep, evs, 256, -1);
        if (k < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < k; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    sock_tune(fd);
                    conn *nc = conn_new(fd);
                    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = nc };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    service(nc);        /* deferred accept: the request is usually there already */
                }
                continue;
            }
            if (evs[i].events & EPOLLERR) { conn_close(c); continue; }
            service(c);
        }
    }
}
