/* blockframe.c: a run of an SSTable's data blocks stored as the file holds them, in one call.
 *
 * Each raw block becomes `stored || compression byte || u32 checksum` (docs/format.md): stored is
 * `u32 raw length || LZ4 block` when compression is on and that is at most 7/8 of the raw size
 * (block.compress_block's rule), else the raw bytes; the checksum is the low 32 bits of XXH3-64 over
 * stored and the compression byte. The output is every framed block back to back: what the table writer
 * appends with one write. Why: per block, the Python path (compress_block, a bytearray, checksum, one
 * pwrite) took the GIL four times; a flush writes ~1,900 blocks per 32 MiB memtable and competes for
 * the GIL with the writer thread, so its wall time stretched to several times its CPU time.
 *
 * Byte-identical to the Python path: LZ4 is the lz4 package's own code, called as lz4.block.compress
 * calls it (a stream state reset with LZ4_resetStream, then LZ4_compress_fast_continue with
 * acceleration 1 and a destination of LZ4_compressBound bytes), and XXH3_64bits is the xxhash
 * package's. This extension links no library: the three functions are taken from those packages'
 * extension modules and handed over once (lsm_frame_set_codecs), after which lsmmail/engine/block_frame.py
 * checks the output against the Python path before using it. */
#include <string.h>

#include "blockframe.h"
#include "lsm_native.h"

typedef void (*lz4_reset_fn)(void *stream);
typedef int (*lz4_compress_fn)(void *stream, const char *src, char *dst, int src_size, int dst_cap,
                               int acceleration);
typedef uint64_t (*xxh3_fn)(const void *data, size_t len);

/* Room for the LZ4 stream state: sizeof(LZ4_stream_t) is 16,416 bytes in lz4 1.9 (LZ4_STREAMSIZE);
 * a library reporting more than this is refused. */
#define STATE_WORDS 4096
static lz4_reset_fn g_reset;
static lz4_compress_fn g_compress;
static xxh3_fn g_hash;

int lsm_frame_set_codecs(void *lz4_reset_stream, void *lz4_compress_fast_continue, void *xxh3_64bits,
                         int lz4_state_size) {
    if (!lz4_reset_stream || !lz4_compress_fast_continue || !xxh3_64bits || lz4_state_size <= 0 ||
        (size_t)lz4_state_size > STATE_WORDS * sizeof(uint64_t)) {
        g_reset = NULL;
        g_compress = NULL;
        g_hash = NULL;
        return LSM_EINVAL;
    }
    g_reset = (lz4_reset_fn)lz4_reset_stream;
    g_compress = (lz4_compress_fn)lz4_compress_fast_continue;
    g_hash = (xxh3_fn)xxh3_64bits;
    return 0;
}

int lsm_frame_ready(void) { return g_reset && g_compress && g_hash; }

static inline void put_u32(uint8_t *p, uint32_t x) {
    p[0] = (uint8_t)x;
    p[1] = (uint8_t)(x >> 8);
    p[2] = (uint8_t)(x >> 16);
    p[3] = (uint8_t)(x >> 24);
}

/* LZ4_compressBound: the most an LZ4 block of n bytes can take. */
static inline size_t lz4_bound(size_t n) { return n + n / 255 + 16; }

uint64_t lsm_frame_bound(const uint64_t *ends, size_t n) {
    uint64_t total = 0, a = 0;
    for (size_t i = 0; i < n; i++) {
        total += 4 + lz4_bound(ends[i] - a) + 5;
        a = ends[i];
    }
    return total;
}

int64_t lsm_frame_blocks(const uint8_t *src, const uint64_t *ends, size_t n, int compress, uint8_t *dst,
                         size_t cap, uint64_t *stored) {
    /* Blocks i = src[ends[i-1]:ends[i]] (ends[-1] = 0), framed into dst; stored[i] = block i's stored
     * size (without its 5-byte trailer). Returns the bytes written, LSM_ESPACE if cap is under
     * lsm_frame_bound(ends, n), LSM_EINVAL without codecs or for a block LZ4 cannot take (>= 2 GiB). */
    if (!lsm_frame_ready()) return LSM_EINVAL;
    uint64_t state[STATE_WORDS];
    size_t pos = 0, a = 0;
    for (size_t i = 0; i < n; i++) {
        if (ends[i] < a) return LSM_EINVAL;
        size_t len = ends[i] - a;
        const uint8_t *raw = src + a;
        if (len > 0x7E000000u) return LSM_EINVAL; /* LZ4_MAX_INPUT_SIZE */
        size_t bound = lz4_bound(len);
        if (cap - pos < 4 + bound + 5) return LSM_ESPACE;
        size_t sl = len;
        uint8_t kind = 0;
        if (compress && len) {
            g_reset(state);
            int c = g_compress(state, (const char *)raw, (char *)dst + pos + 4, (int)len, (int)bound, 1);
            if (c > 0 && ((uint64_t)c + 4) * 8 <= (uint64_t)len * 7) {
                put_u32(dst + pos, (uint32_t)len);
                sl = (size_t)c + 4;
                kind = 1;
            }
        }
        if (!kind) memcpy(dst + pos, raw, len);
        dst[pos + sl] = kind;
        put_u32(dst + pos + sl + 1, (uint32_t)g_hash(dst + pos, sl + 1));
        stored[i] = sl;
        pos += sl + 5;
        a = ends[i];
    }
    return (int64_t)pos;
}
