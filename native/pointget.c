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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lsm_native.h"
#include "blockget.h"
#include "pointget.h"
#include "lsm_bytes.h"
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
    return lsm_key_cmp(a, alen, b, blen);
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

/* Stored blocks up to this size (a 16 KiB block's LZ4 payload, or one stored raw, plus its trailer) are
 * read into a buffer on the stack instead of a malloc'd one. */
#define STACK_IO (24 * 1024)

/* Whether the last block read from a file was stored raw (not LZ4): then the next read goes straight into
 * its cache entry instead of a buffer it would be copied from (an 8 KiB memmove per miss: 2.8% of a
 * random point read's time, ~10% of a reverse scan's, perf). A hint only, shared by all threads (relaxed
 * atomics): a wrong guess costs one extra allocation (an LZ4 block read into an entry) or one copy. */
static int g_raw_hint = 1;

int64_t lsm_block_fetch(lsm_block_cache *c, uint64_t table, int fd, uint64_t offset, uint64_t size,
                        int verify, lsm_bc_entry **ent, uint64_t *out) {
    /* Data block (offset, size) of `table` (fd >= 0: read with pread) as a block-cache entry the caller
     * holds a reference to (*ent): 1 if it came from the cache c (checked when it was published), 0 if it
     * was read now (a private entry: the caller checks the block, then lsm_bc_publish'es it, or releases
     * it if it is malformed). Errors as lsm_block_load: LSM_ECORRUPT (out[2] = why), LSM_EIO (out[1] =
     * errno), LSM_ESPACE (out of memory), LSM_EINVAL (no codecs). c may be NULL (no cache). */
    if (c) {
        lsm_bc_entry *e = lsm_bc_lookup(c, table, offset);
        if (e) {
            *ent = e;
            return 1;
        }
    }
    if (!lsm_pointget_ready()) return LSM_EINVAL;
    uint64_t n = size + 5;
    uint8_t stack[STACK_IO];
    lsm_bc_entry *direct = NULL; /* the entry read into, when the hint says raw */
    uint8_t *heap = NULL, *io = stack;
    if (__atomic_load_n(&g_raw_hint, __ATOMIC_RELAXED)) {
        if (!(direct = lsm_bc_entry_new((size_t)n))) return LSM_ESPACE;
        io = direct->data;
    } else if (n > STACK_IO) {
        if (!(io = heap = malloc((size_t)n))) return LSM_ESPACE;
    }
    int64_t rc;
    /* First the read and checks, into io (raw = NULL: an LZ4 block answers LSM_ESPACE with its raw
     * length, after its checksum was verified). */
    rc = lsm_block_load(fd, offset, NULL, size, verify, io, (size_t)n, NULL, 0, out);
    lsm_bc_entry *e = NULL;
    if (rc >= 0) {
        /* stored raw: the payload is io[0:rc) */
        if (direct) {
            e = direct;
            e->len = (size_t)rc;
            direct = NULL;
        } else {
            __atomic_store_n(&g_raw_hint, 1, __ATOMIC_RELAXED);
            e = lsm_bc_entry_new((size_t)rc);
            if (!e) rc = LSM_ESPACE;
            else memcpy(e->data, io, (size_t)rc);
        }
    } else if (rc == LSM_ESPACE && io[size] == 1) {
        uint64_t rlen = out[1];
        if (direct) __atomic_store_n(&g_raw_hint, 0, __ATOMIC_RELAXED);
        if (size - 4 > 0x7FFFFFFF || rlen > 0x7FFFFFFF) {
            out[2] = WHY_LZ4_LENGTH;
            rc = LSM_ECORRUPT;
        } else if (!(e = lsm_bc_entry_new((size_t)rlen))) {
            rc = LSM_ESPACE;
        } else {
            int d = g_lz4((const char *)io + 4, (char *)e->data, (int)(size - 4), (int)rlen);
            if (d < 0 || (uint64_t)d != rlen) {
                out[2] = WHY_LZ4_DATA;
                rc = LSM_ECORRUPT;
            } else {
                rc = (int64_t)rlen;
            }
        }
    }
    lsm_bc_release(NULL, direct); /* unless it became e: then NULL */
    free(heap);
    if (rc < 0) {
        lsm_bc_release(NULL, e);
        return rc;
    }
    *ent = e;
    return 0;
}

/* Why a cached point read failed beyond lsm_block_load's reasons: lsm_block_get found the block malformed. */
enum { WHY_MALFORMED = 6 };

int64_t lsm_point_get_cached(struct lsm_memtable *const *mems, size_t nmem, const lsm_probe_table *t,
                             const uint32_t *group_end, const uint8_t *group_sorted, size_t ngroups,
                             size_t from, const uint8_t *ukey, size_t ulen, uint64_t snap, lsm_block_cache *c,
                             int verify, uint8_t *vbuf, size_t vcap, uint64_t *out, const uint8_t **value) {
    /* A whole point read in one call: lsm_point_get, then each data block it names is taken from the
     * block cache c (or read, checked, searched and then cached: lsm_block_fetch + lsm_block_get), and
     * the next table probed while none answers. Returns LSM_MEM_HIT with out[0] = trailer, out[1] = value
     * length and *value = its bytes (a memtable's, or vbuf, where a table's value is copied); the table
     * count when no table holds the key; a table position ti (out[0] = its block) when that table's
     * fd < 0 (the caller reads it, then calls again from ti + 1); LSM_ESPACE with out[1] = the bytes
     * needed when the value does not fit vcap (call again with a larger vbuf); LSM_ECORRUPT (out[2] = why,
     * 6 = malformed block) or LSM_EIO (out[1] = errno) with out[3] = the table position and out[4] = the
     * block offset. A malformed block is never cached (a cached one found malformed is dropped). */
    size_t total = ngroups ? group_end[ngroups - 1] : 0;
    int64_t ti = lsm_point_get(mems, nmem, t, group_end, group_sorted, ngroups, from, ukey, ulen, snap, out,
                               value);
    uint8_t kstack[1024];
    for (;;) {
        if (ti == LSM_MEM_HIT || ti < 0 || (uint64_t)ti >= total) return ti;
        const lsm_probe_table *p = &t[ti];
        if (p->fd < 0 || !p->boff) return ti;
        for (uint64_t bi = out[0]; bi < p->n; bi++) {
            lsm_bc_entry *e = NULL;
            uint64_t off = p->boff[bi];
            int64_t got = lsm_block_fetch(c, p->table, (int)p->fd, off, p->bsize[bi], verify, &e, out);
            if (got < 0) {
                out[3] = (uint64_t)ti;
                out[4] = off;
                return got;
            }
            uint64_t o[4];
            uint8_t *kb = e->len <= sizeof(kstack) ? kstack : malloc(e->len ? e->len : 1);
            int64_t rc = kb ? lsm_block_get(e->data, e->len, ukey, ulen, snap, kb, e->len > sizeof(kstack) ?
                                            e->len : sizeof(kstack), o) : LSM_ESPACE;
            if (kb != kstack) free(kb);
            if (rc < 0) {
                if (got == 1 && rc == LSM_ECORRUPT) lsm_bc_erase(c, p->table, off);
                lsm_bc_release(got == 1 ? c : NULL, e);
                if (rc != LSM_ECORRUPT) return rc;
                out[2] = WHY_MALFORMED;
                out[3] = (uint64_t)ti;
                out[4] = off;
                return LSM_ECORRUPT;
            }
            if (got == 0) lsm_bc_publish(c, e, p->table, off, e->len + LSM_BC_OVERHEAD);
            if (rc == 1) {
                if (o[3] > vcap) {
                    lsm_bc_release(c, e);
                    out[1] = o[3];
                    return LSM_ESPACE;
                }
                if (o[3]) memcpy(vbuf, e->data + o[2], (size_t)o[3]);
                lsm_bc_release(c, e);
                out[0] = o[0] << 8 | o[1];
                out[1] = o[3];
                *value = vbuf;
                return LSM_MEM_HIT;
            }
            lsm_bc_release(c, e);
            if (rc == 2) break;
        }
        ti = lsm_point_get(mems, 0, t, group_end, group_sorted, ngroups, (size_t)ti + 1, ukey, ulen, snap,
                           out, value);
    }
}

int64_t lsm_get(const lsm_read_view *v, struct lsm_memtable *const *mems, size_t nmem, size_t from,
                const uint8_t *ukey, size_t ulen, uint64_t snap, lsm_get_scratch *s) {
    /* lsm_point_get_cached with the version's arguments in v and the thread's buffers in s (8 arguments
     * instead of 16: cffi converts each one, ~30 ns apiece), and a memtable's value copied to s->vbuf too
     * (LSM_ESPACE with out[1] = its length if it does not fit), so a hit's value is always s->vbuf
     * [0:out[1]) (Python reads a struct's pointer field for ~250 ns; the copy of 1 KiB is ~30). */
    int64_t rc = lsm_point_get_cached(mems, nmem, v->t, v->group_end, v->group_sorted, v->ngroups, from, ukey,
                                      ulen, snap, v->cache, v->verify, s->vbuf, s->vcap, s->out, &s->value);
    if (rc == LSM_MEM_HIT && s->value != s->vbuf) {
        if (s->out[1] > s->vcap) return LSM_ESPACE;
        if (s->out[1]) memcpy(s->vbuf, s->value, (size_t)s->out[1]);
        s->value = s->vbuf;
    }
    return rc;
}

/* The kinds lsm_get_state tells apart (keys.py KIND_*). */
enum { KIND_DELETE = 0, KIND_PUT = 1, KIND_BLOB = 2 };
#define MAX_USER_KEY 65535u /* keys.py MAX_KEY_SIZE */

int64_t lsm_get_state(const lsm_read_state *rs, const uint8_t *ukey, size_t ulen, uint64_t snap,
                      lsm_get_scratch *s) {
    /* lsm_get over a read state's memtables and version, its answer folded into the return value so that
     * a get needs nothing else from Python in the common cases: >= 0, the version found is a PUT and the
     * result is its value length (the value in s->vbuf, s->out[0] = its trailer); LSM_GET_NONE, no version
     * of ukey at or below snap, or the newest is a DELETE; LSM_GET_BLOB, the newest is a blob reference
     * (s->out[0] = trailer, s->vbuf[0:s->out[1]) = the reference). Anything else (a table that is not an
     * OS file, a value larger than s->vcap, a corrupt block or a read error, as lsm_get reports them; a
     * found kind this function does not know) returns LSM_GET_SLOW, and LSM_EINVAL is returned for a key
     * that is empty or longer than 65,535 bytes: the caller then takes its full path, which reports each
     * case. Range tombstones are the caller's (it checks a found version against them). */
    if (ulen == 0 || ulen > MAX_USER_KEY) return LSM_EINVAL;
    int64_t rc = lsm_get(rs->view, rs->mems, rs->nmem, 0, ukey, ulen, snap, s);
    if (rc == LSM_MEM_HIT) {
        unsigned kind = (unsigned)(s->out[0] & 0xFF);
        if (kind == KIND_PUT) return (int64_t)s->out[1];
        if (kind == KIND_DELETE) return LSM_GET_NONE;
        if (kind == KIND_BLOB) return LSM_GET_BLOB;
        return LSM_GET_SLOW;
    }
    const lsm_read_view *v = rs->view;
    size_t total = v->ngroups ? v->group_end[v->ngroups - 1] : 0;
    if (rc >= 0 && (uint64_t)rc >= total) return LSM_GET_NONE;
    return LSM_GET_SLOW;
}
