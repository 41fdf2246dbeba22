/* Inline byte-string comparison for the kernels' key compares. Keys are short (the bench's are 16 bytes,
 * a mail key ~30) and share long prefixes, so a call into libc's memcmp cost more in its setup than the
 * two or four word compares it stands for: it was ~20% of a sorted batch insert's profile, and 5-7% of
 * point reads and scans (perf, 200 MB of 1 KiB values), where the index and in-block searches and the
 * merge of sources compare a key at every step. */
#ifndef LSM_BYTES_H
#define LSM_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t lsm_ld64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The 8 bytes at p as a big-endian number: comparing two such numbers compares the bytes in order. */
static inline uint64_t lsm_ld64be(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(lsm_ld64(p));
#else
    return lsm_ld64(p);
#endif
}

/* memcmp's sign (-1, 0, 1) over l bytes. */
static inline int lsm_bytes_cmp(const uint8_t *a, const uint8_t *b, size_t l) {
    for (; l >= 8; a += 8, b += 8, l -= 8) {
        uint64_t x = lsm_ld64be(a), y = lsm_ld64be(b);
        if (x != y) return x < y ? -1 : 1;
    }
    for (; l; a++, b++, l--)
        if (*a != *b) return *a < *b ? -1 : 1;
    return 0;
}

/* Bytewise order of two strings as Python orders bytes (a proper prefix first): -1, 0 or 1. */
static inline int lsm_key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    int c = lsm_bytes_cmp(a, b, alen < blen ? alen : blen);
    if (c) return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

#endif
