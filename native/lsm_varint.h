/* The varint writer every kernel that builds blocks shares (LEB128-style, little-endian groups of 7 bits,
 * as lsmmail.engine.coding.put_varint writes them; docs/format.md). `out` must have room for 10 bytes. */
#ifndef LSM_VARINT_H
#define LSM_VARINT_H

#include <stddef.h>
#include <stdint.h>

static inline size_t lsm_put_varint(uint8_t *out, uint64_t v) {
    size_t i = 0;
    while (v >= 0x80) {
        out[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[i++] = (uint8_t)v;
    return i;
}

#endif
