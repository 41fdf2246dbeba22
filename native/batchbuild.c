/* Encoding many PUT entries of a write batch at once (WriteBatch.put_packed, docs/format.md "WAL record
 * payload = one write batch"): entry i is the PUT of key keys[key_end[i-1] .. key_end[i]) (key_end[-1] = 0)
 * to value vals[val_end[i-1] .. val_end[i]), encoded as
 *     u8 kind (1 = PUT) | varint key length | key | varint value length | value
 * back to back into out, exactly the bytes n WriteBatch.put calls append. Why: a search segment flush puts
 * ~30,000 keys sliced from one kernel output; one Python put per key cost ~0.5 us.
 *
 * The ends must be non-decreasing, key_end[n-1] == keys_len and val_end[n-1] == vals_len (every byte is
 * used); every key 1..65535 bytes, every value < 2^32 bytes. out_cap must be at least
 * keys_len + vals_len + 9 * n (1 kind byte, <= 3 + <= 5 varint bytes per entry).
 * Returns the bytes written, or -3 (LSM_EINVAL) when an argument breaks the rules above (nothing useful is
 * in out then). */
#include <string.h>

#include "batchbuild.h"

#define BB_EINVAL -3
#define BB_MAX_KEY 65535u
#define BB_KIND_PUT 1

static inline size_t bb_varint(uint8_t *out, size_t pos, uint64_t v) {
    while (v >= 0x80) {
        out[pos++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[pos++] = (uint8_t)v;
    return pos;
}

int64_t lsm_batch_pack_puts(size_t n, const uint8_t *keys, size_t keys_len, const uint64_t *key_end,
                            const uint8_t *vals, size_t vals_len, const uint64_t *val_end, uint8_t *out,
                            size_t out_cap) {
    if (n == 0) return (keys_len == 0 && vals_len == 0) ? 0 : BB_EINVAL;
    if (key_end[n - 1] != keys_len || val_end[n - 1] != vals_len) return BB_EINVAL;
    if (out_cap < keys_len || out_cap - keys_len < vals_len || (out_cap - keys_len - vals_len) / 9 < n)
        return BB_EINVAL;
    uint64_t ka = 0, va = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t kb = key_end[i], vb = val_end[i];
        /* in bounds at every step, not only at the end: an end past the buffer followed by a smaller
         * one must not be read (or written: out_cap counts the buffers' bytes) */
        if (kb <= ka || kb > keys_len || kb - ka > BB_MAX_KEY || vb < va || vb > vals_len ||
            vb - va > 0xFFFFFFFFull)
            return BB_EINVAL;
        size_t kl = (size_t)(kb - ka), vl = (size_t)(vb - va);
        out[o++] = BB_KIND_PUT;
        o = bb_varint(out, o, kl);
        memcpy(out + o, keys + ka, kl);
        o += kl;
        o = bb_varint(out, o, vl);
        memcpy(out + o, vals + va, vl);
        o += vl;
        ka = kb;
        va = vb;
    }
    return (int64_t)o;
}
