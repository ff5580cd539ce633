/* wspush.c -- the backend of the soak benchmark's slow-consumer part (benchmarks/soak).
 *
 * A WebSocket server on one port, single-threaded epoll, two routes:
 *  - "/push": after the 101 the server sends binary frames of PUSH_FRAME bytes for as long as its
 *    socket accepts them, up to LIMIT bytes per session (-l).  A client that stops reading
 *    therefore has the proxy in front of it facing a backend that keeps sending: what the proxy
 *    holds per stalled session is what it reads from the backend beyond what the client's socket
 *    takes.  The server's own buffering is bounded: frames are written straight from one prebuilt
 *    buffer, and the socket's send buffer is set small (PUSH_SNDBUF), so the data stays in the
 *    proxy's hands or in the kernel's queues in front of it.  The limit bounds the run: a proxy
 *    that buffers without bound holds LIMIT bytes per session, not all the machine's memory.
 *    Input on these sessions is read and discarded; the stalled clients never send anything and
 *    just close their sockets at the end.
 *  - any other path: an echo of small frames (payload <= 125 bytes, what the healthy sessions
 *    send), unmasked, with the same opcode; ping -> pong; Close -> the same code, then the server
 *    closes TCP first (RFC 6455 section 7.1.1).  Unmasked, fragmented or larger frames and RSV
 *    bits get Close 1002 or 1009.
 * SIGUSR1 prints "STATS push_sessions N blocked B at_limit L pushed BYTES" on stdout: "blocked"
 * counts push sessions whose last write found the socket full, i.e. the stall has reached the
 * backend (the proxy stopped reading).
 *
 * Usage: wspush -p PORT [-l LIMIT_BYTES]   prints "READY <port>" once listening.
 */
#include "common.h"      /* benchmarks/e2e/csrc: SHA-1, base64, masking, helpers */

#define PUSH_FRAME 16384
#define PUSH_FRAMES 4              /* frames in the prebuilt buffer */
#define PUSH_SNDBUF 16384
#define HEAD_MAX 4096
#define IBUF 4096
#define OBUF 8192

typedef struct conn {
    int fd, upgraded, push, blocked, closing;
    size_t poff; uint64_t pushed;             /* push: offset in the prebuilt buffer, total sent */
    char head[HEAD_MAX + 1]; size_t hlen;
    unsigned char in[IBUF]; size_t ilen;
    unsigned char out[OBUF]; size_t olen;
} conn;

static int ep;
static unsigned char *pbuf;
static size_t plen;
static uint64_t limit = 4u << 20;
static conn **pushers; static size_t npushers, cappushers;
static volatile sig_atomic_t want_stats;

static void on_usr1(int sig) { (void)sig; want_stats = 1; }

static void set_events(conn *c, uint32_t events) {
    struct epoll_event ev = { .events = events, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(conn *c) {
    if (c->push)
        for (size_t i = 0; i < npushers; i++)
            if (pushers[i] == c) { pushers[i] = pushers[--npushers]; break; }
    close(c->fd);
    free(c);
}

/* Write out[]; returns -1 if the connection was closed. */
static int flush_out(conn *c) {
    while (c->olen) {
        ssize_t n = send(c->fd, c->out, c->olen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            conn_close(c); return -1;
        }
        memmove(c->out, c->out + n, c->olen - (size_t)n); c->olen -= (size_t)n;
    }
    if (!c->olen && c->closing) { conn_close(c); return -1; }
    set_events(c, c->olen ? EPOLLOUT : (c->olen < OBUF / 2 ? EPOLLIN : 0));
    return 0;
}

static void put(conn *c, const void *p, size_t n) {
    if (c->olen + n > OBUF) return;            /* cannot happen: reading stops at OBUF / 2 */
    memcpy(c->out + c->olen, p, n); c->olen += n;
}

static void close_with(conn *c, unsigned code) {
    unsigned char f[4] = { 0x88, 2, (unsigned char)(code >> 8), (unsigned char)code };
    put(c, f, 4);
    c->closing = 1;
}

/* Echo the complete small frames in in[]. */
static void echo_frames(conn *c) {
    size_t off = 0;
    while (!c->closing && c->ilen - off >= 2 && c->olen < OBUF / 2) {
        unsigned char *p = c->in + off;
        unsigned b0 = p[0], b1 = p[1], len = b1 & 127, op = b0 & 15;
        if (!(b1 & 0x80) || (b0 & 0x70) || !(b0 & 0x80)) { close_with(c, 1002); break; }
        if (len > 125) { close_with(c, 1009); break; }
        if (c->ilen - off < 6 + len) break;
        unsigned char pl[125];
        ws_unmask_copy(pl, p + 6, len, p + 2, 0);
        off += 6 + len;
        if (op == 8) {
            unsigned code = len >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1000;
            close_with(c, code);
        } else if (op == 9 || op == 1 || op == 2) {
            unsigned char h[2] = { (unsigned char)(op == 9 ? 0x8A : b0), (unsigned char)len };
            put(c, h, 2); put(c, pl, len);
        } else if (op != 10) { close_with(c, 1002); break; }
    }
    memmove(c->in, c->in + off, c->ilen - off); c->ilen -= off;
}

/* Push frames until the socket is full or the limit is reached. */
static void push(conn *c) {
    while (c->pushed < limit || c->poff) {
        ssize_t n = send(c->fd, pbuf + c->poff, plen - c->poff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) { conn_close(c); return; }
            c->blocked = 1;
            set_events(c, EPOLLIN | EPOLLOUT);
            return;
        }
        c->pushed += (uint64_t)n;
        c->poff = (c->poff + (size_t)n) % plen;
    }
    c->blocked = 0;
    set_events(c, EPOLLIN);
}

static void upgrade(conn *c) {
    size_t vl, kl; const char *v = http_header(c->head, "Upgrade", &vl);
    const char *key = http_header(c->head, "Sec-WebSocket-Key", &kl);
    if (!v || !has_token(v, vl, "websocket") || !key || strncmp(c->head, "GET /", 5)) {
        static const char r[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n";
        put(c, r, sizeof r - 1); c->closing = 1;
        return;
    }
    char acc[29], resp[256];
    ws_accept(key, kl, acc);
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
    put(c, resp, (size_t)rl);
    c->upgraded = 1;
    c->push = strncmp(c->head, "GET /push ", 10) == 0 || strncmp(c->head, "GET /push?", 10) == 0;
    if (c->push) {
        int sb = PUSH_SNDBUF;
        setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
        if (npushers == cappushers) {
            cappushers = cappushers ? 2 * cappushers : 1024;
            pushers = realloc(pushers, cappushers * sizeof *pushers);
            if (!pushers) die("realloc");
        }
        pushers[npushers++] = c;
    }
}

/* Read whatever is there (a readiness for writing only costs one EAGAIN), echo, write, push. */
static void on_event(conn *c, uint32_t events) {
    if (events & EPOLLERR) { conn_close(c); return; }
    while (!c->closing) {
        ssize_t n;
        if (!c->upgraded) {
            n = recv(c->fd, c->head + c->hlen, HEAD_MAX - c->hlen, 0);
            if (n > 0) {
                c->hlen += (size_t)n; c->head[c->hlen] = 0;
                char *end = strstr(c->head, "\r\n\r\n");
                if (end) {               /* frames may follow the head: they go to in[] */
                    size_t rest = c->hlen - (size_t)(end + 4 - c->head);
                    memcpy(c->in, end + 4, rest); c->ilen = rest;
                    end[4] = 0;
                    upgrade(c);
                } else if (c->hlen == HEAD_MAX) { conn_close(c); return; }
                continue;
            }
        } else if (c->push) {
            static unsigned char sink[65536];
            n = recv(c->fd, sink, sizeof sink, 0);
            if (n > 0) continue;
        } else {
            echo_frames(c);
            if (c->olen >= OBUF / 2 || c->closing) break;
            n = recv(c->fd, c->in + c->ilen, IBUF - c->ilen, 0);
            if (n > 0) { c->ilen += (size_t)n; continue; }
        }
        if (n == 0) { conn_close(c); return; }
        if (errno == EAGAIN || errno == EINTR) break;
        conn_close(c); return;
    }
    if (c->olen && flush_out(c) < 0) return;
    if (c->push && !c->olen) push(c);
    else if (!c->olen) set_events(c, EPOLLIN);
}

static void print_stats(void) {
    uint64_t pushed = 0; size_t blocked = 0, at_limit = 0;
    for (size_t i = 0; i < npushers; i++) {
        pushed += pushers[i]->pushed;
        blocked += pushers[i]->blocked;
        at_limit += pushers[i]->pushed >= limit;
    }
    printf("STATS push_sessions %zu blocked %zu at_limit %zu pushed %llu\n", npushers, blocked,
           at_limit, (unsigned long long)pushed);
    fflush(stdout);
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-l") && i + 1 < argc) limit = strtoull(argv[++i], NULL, 10);
        else { fprintf(stderr, "usage: wspush -p PORT [-l LIMIT_BYTES]\n"); return 2; }
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa_usr1 = { .sa_handler = on_usr1 };     /* no SA_RESTART: wakes epoll_wait */
    sigaction(SIGUSR1, &sa_usr1, NULL);

    plen = PUSH_FRAMES * (4 + PUSH_FRAME);
    pbuf = malloc(plen);
    if (!pbuf) die("malloc");
    for (size_t f = 0; f < PUSH_FRAMES; f++) {
        unsigned char *p = pbuf + f * (4 + PUSH_FRAME);
        p[0] = 0x82; p[1] = 126; p[2] = PUSH_FRAME >> 8; p[3] = PUSH_FRAME & 255;
        memset(p + 4, 'p', PUSH_FRAME);
    }

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
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
        if (want_stats) { want_stats = 0; print_stats(); }
        int k = epoll_wait(ep, evs, 256, -1);
        if (k < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < k; i++) {
            conn *c = evs[i].data.ptr;
            if (c) { on_event(c, evs[i].events); continue; }
            for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) break;
                sock_tune(fd);
                conn *nc = calloc(1, sizeof *nc);
                if (!nc) die("calloc");
                nc->fd = fd;
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = nc };
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            }
        }
    }
}
