/* common.h -- shared helpers for the fastgw end-to-end benchmark programs
 * (wsecho: the echo backend, wsload: the load generator).
 *
 * Self-contained on purpose: SHA-1 (FIPS 180-4) and base64 for Sec-WebSocket-Accept
 * (RFC 6455 section 4.2.2), WebSocket unmasking 8 bytes at a time with a mask phase, a
 * monotonic clock and socket helpers.  No libssl headers, no dependencies beyond libc.
 */
#ifndef FASTGW_BENCH_COMMON_H
#define FASTGW_BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---------------------------------------------------------------- SHA-1 */
typedef struct { uint32_t h[5]; uint64_t len; unsigned char buf[64]; size_t n; } sha1_ctx;

static inline uint32_t rol32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static void sha1_block(sha1_ctx *c, const unsigned char *p) {
    uint32_t w[80], a, b, d, e, f, k, t, cc;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4];
    for (int i = 0; i < 80; i++) {
        if (i < 20)      { f = (b & cc) | (~b & d);           k = 0x5A827999; }
        else if (i < 40) { f = b ^ cc ^ d;                    k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & cc) | (b & d) | (cc & d); k = 0x8F1BBCDC; }
        else             { f = b ^ cc ^ d;                    k = 0xCA62C1D6; }
        t = rol32(a, 5) + f + e + k + w[i];
        e = d; d = cc; cc = rol32(b, 30); b = a; a = t;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e;
}

static void sha1_init(sha1_ctx *c) {
    c->h[0] = 0x67452301; c->h[1] = 0xEFCDAB89; c->h[2] = 0x98BADCFE; c->h[3] = 0x10325476; c->h[4] = 0xC3D2E1F0;
    c->len = 0; c->n = 0;
}

static void sha1_update(sha1_ctx *c, const void *data, size_t len) {
    const unsigned char *p = data;
    c->len += len;
    while (len) {
        size_t take = 64 - c->n < len ? 64 - c->n : len;
        memcpy(c->buf + c->n, p, take);
        c->n += take; p += take; len -= take;
        if (c->n == 64) { sha1_block(c, c->buf); c->n = 0; }
    }
}

static void sha1_final(sha1_ctx *c, unsigned char out[20]) {
    uint64_t bits = c->len * 8;
    unsigned char pad = 0x80, zero = 0, lenb[8];
    sha1_update(c, &pad, 1);
    while (c->n != 56) sha1_update(c, &zero, 1);
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha1_update(c, lenb, 8);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = c->h[i] >> 24; out[4 * i + 1] = c->h[i] >> 16;
        out[4 * i + 2] = c->h[i] >> 8; out[4 * i + 3] = c->h[i];
    }
}

/* ---------------------------------------------------------------- base64 */
static size_t base64_encode(const unsigned char *in, size_t n, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tbl[v >> 18]; out[o++] = tbl[(v >> 12) & 63]; out[o++] = tbl[(v >> 6) & 63]; out[o++] = tbl[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = tbl[v >> 18]; out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2 step 5.4). out: 29 bytes. */
static void ws_accept(const char *key, size_t keylen, char out[29]) {
    sha1_ctx c; unsigned char d[20];
    sha1_init(&c); sha1_update(&c, key, keylen); sha1_update(&c, WS_GUID, sizeof WS_GUID - 1); sha1_final(&c, d);
    base64_encode(d, 20, out);
}

/* ---------------------------------------------------------------- masking */
/* dst[i] = src[i] ^ key[(phase + i) % 4]; 8 bytes at a time (RFC 6455 section 5.3).
 * dst may equal src. Little-endian: rotating the 32-bit key right by 8*phase bits starts it at
 * key[phase]. */
static inline void ws_unmask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                                  const unsigned char key[4], unsigned phase) {
    uint32_t k; memcpy(&k, key, 4);
    phase &= 3;
    if (phase) k = (k >> (8 * phase)) | (k << (32 - 8 * phase));
    uint64_t m = (uint64_t)k << 32 | k;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t v; memcpy(&v, src + i, 8); v ^= m; memcpy(dst + i, &v, 8); }
    for (; i < n; i++) dst[i] = src[i] ^ (unsigned char)(m >> (8 * (i & 7)));
}

/* ---------------------------------------------------------------- batching */
/* Optional "interrupt coalescing" for the throughput scenarios: when an event-loop round read
 * less than BATCH_MIN bytes, sleep `pause_us` before the next epoll_wait so that more data queues
 * up and the next reads and writes are larger.  The side with spare CPU then stops spending it on
 * tiny reads; the proxy still has its socket buffers full (many messages in flight), so its
 * throughput is unchanged.  Off (0) unless -B is given; never used for latency or handshakes. */
#define BATCH_MIN (64 * 1024)
static uint64_t round_bytes;
static void batch_pause(unsigned pause_us) {
    if (pause_us && round_bytes < BATCH_MIN) {
        struct timespec ts = { 0, (long)pause_us * 1000L };
        nanosleep(&ts, NULL);
    }
    round_bytes = 0;
}

/* ---------------------------------------------------------------- misc */
static inline uint64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) { fprintf(stderr, "fatal: %s: %s\n", what, strerror(errno)); exit(2); }

static void sock_tune(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Case-insensitive search for a header value in an HTTP head (NUL-terminated, lines end in CRLF).
 * Returns a pointer to the value (leading blanks skipped) and its length, or NULL. */
static const char *http_header(const char *head, const char *name, size_t *vlen) {
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p && p[2] && !(p[2] == '\r' && p[3] == '\n')) {
        const char *line = p + 2;
        const char *eol = strstr(line, "\r\n");
        if (!eol) return NULL;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *e = eol;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
            *vlen = (size_t)(e - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

/* Does a comma-separated header value contain token (case-insensitive)? */
static int has_token(const char *v, size_t vlen, const char *token) {
    size_t tl = strlen(token);
    const char *end = v + vlen;
    while (v < end) {
        while (v < end && (*v == ' ' || *v == ',' || *v == '\t')) v++;
        const char *s = v;
        while (v < end && *v != ',') v++;
        const char *e = v;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0) return 1;
    }
    return 0;
}

#endif
