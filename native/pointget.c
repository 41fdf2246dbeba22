/* A point read's cache-missing block load in one call (docs/format.md "SSTable"): pread the stored block,
 * verify its checksum, decompress it, and (lsm_block_load_get) look the key up in it, all without the GIL.
 * lsmmail/native_pointget.py holds the pure twins (read_at + checksum + decompress_block + block_get).
 *
 * This extension links no library: LZ4_decompress_safe and XXH3_64bits come from the lz4 and xxhash
 * packages' extension modules (runtime dependencies, each carrying the library), handed over once by
 * Python as function pointers. Until that is done (lsm_pointget_ready() == 0) the loads return LSM_EINVAL
 * and the Python side uses the twin.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "lsm_native.h"
#include "blockget.h"
#include "pointget.h"
#include "tablefind.h"
#include "memtable.h"

typedef int (*lz4_fn)(const char *src, char *dst, int src_size, int dst_cap);
typedef uint64_t (*xxh3_fn)(const void *data, size_t len);

static lz4_fn g_lz4;
static xxh3_fn g_xxh3;

void lsm_pointget_set_codecs(void *lz4_decompress_safe, void *xxh3_64bits) {
    g_lz4 = (lz4_fn)lz4_decompress_safe;
    g_xxh3 = (xxh3_fn)xxh3_64bits;
}

int lsm_pointget_ready(void) { return g_lz4 != NULL && g_xxh3 != NULL; }

/* Why a load failed (out[2] with LSM_ECORRUPT / LSM_EIO), so Python can name it like the twin does. */
enum { WHY_SHORT = 1, WHY_CHECKSUM = 2, WHY_COMPRESSION = 3, WHY_LZ4_LENGTH = 4, WHY_LZ4_DATA = 5 };

/* LZ4 cannot expand data by more than ~255x; a larger declared length is corrupt (block.py's
 * _LZ4_MAX_RATIO, the same bound). */
#define LZ4_MAX_RATIO 256

int64_t lsm_block_load(int fd, uint64_t offset, const uint8_t *stored, uint64_t size, int verify,
                       uint8_t *io, size_t iocap, uint8_t *raw, size_t rawcap, uint64_t *out) {
    /* The raw payload of the stored block (offset, size) (size counts the payload, not the 5-byte
     * trailer): read from fd at offset, or taken from stored (size + 5 bytes) when fd < 0.
     * Returns the raw length; out[0] = 0 if the raw payload is io[0:len] (stored uncompressed), 1 if it
     * is raw[0:len]. LSM_ECORRUPT with out[2] = why; LSM_EIO with out[1] = errno (out[2] = WHY_SHORT
     * and out[1] = 0 for end of file: a short read is corruption); LSM_ESPACE with out[1] = the bytes
     * needed when io (fd >= 0) or raw is too small; LSM_EINVAL before lsm_pointget_set_codecs. */
    if (!lsm_pointget_ready()) return LSM_EINVAL;
    uint64_t n = size + 5;
    const uint8_t *buf;
    if (fd >= 0) {
        if (n > iocap) { out[1] = n; return LSM_ESPACE; }
        uint64_t got = 0;
        while (got < n) {
            ssize_t r = pread(fd, io + got, (size_t)(n - got), (off_t)(offset + got));
            if (r < 0) {
                if (errno == EINTR) continue;
                out[1] = (uint64_t)errno; out[2] = 0;
                return LSM_EIO;
            }
            if (r == 0) { out[1] = 0; out[2] = WHY_SHORT; return LSM_ECORRUPT; }
            got += (uint64_t)r;
        }
        buf = io;
    } else {
        buf = stored;
    }
    if (verify) {
        uint32_t want = (uint32_t)buf[size + 1] | ((uint32_t)buf[size + 2] << 8) |
                        ((uint32_t)buf[size + 3] << 16) | ((uint32_t)buf[size + 4] << 24);
        if ((uint32_t)g_xxh3(buf, (size_t)size + 1) != want) { out[2] = WHY_CHECKSUM; return LSM_ECORRUPT; }
    }
    uint8_t comp = buf[size];
    if (comp == 0) {
        if (fd < 0) {
            if (size > rawcap) { out[1] = size; return LSM_ESPACE; }
            memcpy(raw, buf, (size_t)size);
            out[0] = 1;
        } else {
            out[0] = 0;
        }
        return (int64_t)size;
    }
    if (comp != 1) { out[2] = WHY_COMPRESSION; return LSM_ECORRUPT; }
    if (size < 5) { out[2] = WHY_LZ4_LENGTH; return LSM_ECORRUPT; }
    uint64_t rlen = (uint64_t)buf[0] | ((uint64_t)buf[1] << 8) | ((uint64_t)buf[2] << 16) |
                    ((uint64_t)buf[3] << 24);
    if (rlen == 0 || rlen > (uint64_t)LZ4_MAX_RATIO * (size - 4)) { out[2] = WHY_LZ4_LENGTH; return LSM_ECORRUPT; }
    if (rlen > rawcap) { out[1] = rlen; return LSM_ESPACE; }
    if (size - 4 > 0x7FFFFFFF || rlen > 0x7FFFFFFF) { out[2] = WHY_LZ4_LENGTH; return LSM_ECORRUPT; }
    int d = g_lz4((const char *)buf + 4, (char *)raw, (int)(size - 4), (int)rlen);
    if (d < 0 || (uint64_t)d != rlen) { out[2] = WHY_LZ4_DATA; return LSM_ECORRUPT; }
    out[0] = 1;
    return (int64_t)rlen;
}

int64_t lsm_block_load_get(int fd, uint64_t offset, const uint8_t *stored, uint64_t size, int verify,
                           uint8_t *io, size_t iocap, uint8_t *raw, size_t rawcap, const uint8_t *ukey,
                           size_t ulen, uint64_t snap, uint8_t *keybuf, size_t keycap, uint64_t *out) {
    /* lsm_block_load, then lsm_block_get(ukey, snap) in the raw payload. Returns the load's error, or
     * the raw length with out[0] = where it is (as lsm_block_load), out[3] = the lookup's result (1 hit,
     * 2 stop, 0 next; or LSM_ECORRUPT for a malformed block, as a 64-bit two's complement) and, on a hit,
     * out[4..7] = seq, kind, value offset, value length in the raw payload. */
    int64_t len = lsm_block_load(fd, offset, stored, size, verify, io, iocap, raw, rawcap, out);
    if (len < 0) return len;
    const uint8_t *blk = out[0] ? raw : io;
    if ((uint64_t)len > keycap) { out[1] = (uint64_t)len; return LSM_ESPACE; }
    int64_t rc = lsm_block_get(blk, (size_t)len, ukey, ulen, snap, keybuf, keycap, out + 4);
    out[3] = (uint64_t)rc;
    return len;
}

static inline int cmp_user(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    size_t m = alen < blen ? alen : blen;
    int c = m ? memcmp(a, b, m) : 0;
    if (c) return c < 0 ? -1 : 1;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

int64_t lsm_version_find(const lsm_probe_table *t, const uint32_t *group_end, const uint8_t *group_sorted,
                         size_t ngroups, size_t from, const uint8_t *ukey, size_t ulen, uint64_t snap,
                         uint64_t *out) {
    /* The tables of a version that a point read of (ukey, snap) consults, newest first, in one call: the
     * tables are in groups (group g is t[group_end[g-1] .. group_end[g]), group_end[-1] = 0): L0 first,
     * its tables newest first and possibly overlapping (group_sorted 0: each is tried whose range holds
     * ukey), then one group per deeper level, its tables disjoint and in key order (group_sorted 1: only
     * the one table whose range may hold ukey, found by binary search on the largest keys). Starting at
     * table `from` (0, or one past the table of the previous answer), returns the first table whose
     * bloom filter does not rule ukey out and whose index names a data block for it (lsm_table_find),
     * with out[0] = that block; or the table count when there is none. The key's XXH3-64 is computed
     * once. LSM_EINVAL before lsm_pointget_set_codecs. */
    if (!lsm_pointget_ready()) return LSM_EINVAL;
    size_t total = ngroups ? group_end[ngroups - 1] : 0;
    uint64_t h = 0;
    int hashed = 0;
    size_t gs = 0;
    for (size_t g = 0; g < ngroups; gs = group_end[g], g++) {
        size_t ge = group_end[g];
        if (ge <= from || ge <= gs) continue;
        size_t i, stop;
        if (group_sorted[g]) {
            if (from > gs) continue; /* its one candidate was the previous answer */
            size_t lo = gs, hi = ge;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (cmp_user(t[mid].hi, (size_t)t[mid].hilen, ukey, ulen) < 0) lo = mid + 1;
                else hi = mid;
            }
            i = lo;
            stop = lo < ge ? lo + 1 : lo;
        } else {
            i = from > gs ? from : gs;
            stop = ge;
        }
        for (; i < stop; i++) {
            const lsm_probe_table *p = &t[i];
            if (cmp_user(p->lo, (size_t)p->lolen, ukey, ulen) > 0) continue;
            if (cmp_user(p->hi, (size_t)p->hilen, ukey, ulen) < 0) continue;
            if (!hashed) { h = g_xxh3(ukey, ulen); hashed = 1; }
            int64_t bi = lsm_table_find(p->filter, (size_t)p->flen, h, p->ikeys, p->iends, p->iseqs,
                                        (size_t)p->n, ukey, ulen, snap);
            if (bi < 0 || (uint64_t)bi >= p->n) continue;
            out[0] = (uint64_t)bi;
            return (int64_t)i;
        }
    }
    return (int64_t)total;
}

int64_t lsm_point_get(struct lsm_memtable *const *mems, size_t nmem, const lsm_probe_table *t,
                      const uint32_t *group_end, const uint8_t *group_sorted, size_t ngroups, size_t from,
                      const uint8_t *ukey, size_t ulen, uint64_t snap, uint64_t *out, const uint8_t **value) {
    /* A whole point read up to the first data block, in one call: with from == 0, the memtables
     * mems[0..nmem) newest first (lsm_mem_get); the first that holds a version of ukey at or below snap
     * answers: LSM_MEM_HIT with out[0] = its trailer, out[1] = its value length and *value = its bytes
     * (valid while that memtable lives). Otherwise lsm_version_find(..., from, ...) over the tables. */
    if (from == 0) {
        for (size_t i = 0; i < nmem; i++) {
            if (lsm_mem_get(mems[i], ukey, ulen, snap, out, value)) return LSM_MEM_HIT;
        }
    }
    return lsm_version_find(t, group_end, group_sorted, ngroups, from, ukey, ulen, snap, out);
}
