/* Bloom filter build and probe (docs/format.md "Filter block"). Hashes (XXH3-64 of each user key) are
 * computed on the Python side with the xxhash package; this file only sets and tests bits. */
#include "lsm_native.h"

void lsm_bloom_build(const uint64_t *hashes, size_t n, uint8_t *bits, size_t nbytes, uint32_t k) {
    uint64_t m = (uint64_t)nbytes * 8;
    if (m == 0) return;
    for (size_t i = 0; i < n; i++) {
        uint64_t h1 = hashes[i] & 0xFFFFFFFFu, h2 = (hashes[i] >> 32) | 1;
        /* h1 < 2^32 and j*h2 < 31 * 2^32: the sum cannot overflow 64 bits, so it equals the spec's
         * unbounded (h1 + j*h2) mod m. Stepping by h2 mod m keeps one division per key. */
        uint64_t b = h1 % m, step = h2 % m;
        for (uint32_t j = 0; j < k; j++) {
            bits[b >> 3] |= (uint8_t)(1u << (b & 7));
            b += step;
            if (b >= m) b -= m;
        }
    }
}

int lsm_bloom_may_contain(const uint8_t *filter, size_t len, uint64_t h) {
    if (len < 2) return 1; /* no bits: cannot exclude anything */
    uint32_t k = filter[len - 1];
    if (k == 0 || k > 30) return 1; /* a future filter kind: match everything (format.md) */
    uint64_t m = (uint64_t)(len - 1) * 8;
    uint64_t b = (h & 0xFFFFFFFFu) % m, step = ((h >> 32) | 1) % m;
    for (uint32_t j = 0; j < k; j++) {
        if (!(filter[b >> 3] & (1u << (b & 7)))) return 0;
        b += step;
        if (b >= m) b -= m;
    }
    return 1;
}

void lsm_bloom_probe(const uint8_t *filter, size_t len, const uint64_t *hashes, size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = (uint8_t)lsm_bloom_may_contain(filter, len, hashes[i]);
}
