/* Unsigned LEB128 varints (docs/format.md "Conventions"), many per call. */
#include "lsm_native.h"

int64_t lsm_varint_encode(const uint64_t *vals, size_t n, uint8_t *out, size_t cap) {
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = vals[i];
        /* A 64-bit value needs at most 10 bytes; check once per value, not per byte. */
        if (cap - pos < 10) {
            /* Slow path near the end of the buffer: count the bytes first. */
            size_t need = 1;
            for (uint64_t t = v; t >= 0x80; t >>= 7) need++;
            if (cap - pos < need) return LSM_ESPACE;
        }
        while (v >= 0x80) {
            out[pos++] = (uint8_t)(v | 0x80);
            v >>= 7;
        }
        out[pos++] = (uint8_t)v;
    }
    return (int64_t)pos;
}

/* Decode one varint at buf[*pos..len). Returns 0 on success, LSM_ECORRUPT if it runs past the buffer,
 * past 10 bytes, or does not fit 64 bits (a 10th byte above 1). */
static inline int get_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out) {
    size_t p = *pos;
    uint64_t result = 0;
    for (unsigned shift = 0; shift <= 63; shift += 7) {
        if (p >= len) return LSM_ECORRUPT;
        uint8_t b = buf[p++];
        if (shift == 63 && b > 1) return LSM_ECORRUPT;
        result |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *pos = p;
            *out = result;
            return 0;
        }
    }
    return LSM_ECORRUPT;
}

int64_t lsm_varint_decode(const uint8_t *buf, size_t len, uint64_t *out, size_t max_n, size_t *consumed) {
    size_t pos = 0, i = 0;
    while (i < max_n && pos < len) {
        if (get_varint(buf, len, &pos, &out[i]) != 0) return LSM_ECORRUPT;
        i++;
    }
    *consumed = pos;
    return (int64_t)i;
}
