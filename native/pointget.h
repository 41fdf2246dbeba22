/* pointget.c: a point read's cache-missing block load in one call (lsmmail/native_pointget.py has the
 * pure twins). */
#ifndef LSM_POINTGET_H
#define LSM_POINTGET_H
#include <stddef.h>
#include <stdint.h>

#define LSM_EIO (-4)

void lsm_pointget_set_codecs(void *lz4_decompress_safe, void *xxh3_64bits);
int lsm_pointget_ready(void);
int64_t lsm_block_load(int fd, uint64_t offset, const uint8_t *stored, uint64_t size, int verify,
                       uint8_t *io, size_t iocap, uint8_t *raw, size_t rawcap, uint64_t *out);
int64_t lsm_block_load_get(int fd, uint64_t offset, const uint8_t *stored, uint64_t size, int verify,
                           uint8_t *io, size_t iocap, uint8_t *raw, size_t rawcap, const uint8_t *ukey,
                           size_t ulen, uint64_t snap, uint8_t *keybuf, size_t keycap, uint64_t *out);

/* One table of a version as lsm_version_find sees it: its bloom filter, its index laid out as
 * lsm_table_find takes it, and its user key range. */
typedef struct {
    const uint8_t *filter;
    uint64_t flen;
    const uint8_t *ikeys;
    const uint64_t *iends;
    const uint64_t *iseqs;
    uint64_t n;
    const uint8_t *lo;
    uint64_t lolen;
    const uint8_t *hi;
    uint64_t hilen;
    /* For lsm_point_get_cached: the file to pread (-1: not an OS file, the caller reads its blocks), the
     * table's number (block cache key) and each data block's offset and stored size (no trailer). */
    int64_t fd;
    uint64_t table;
    const uint64_t *boff;
    const uint64_t *bsize;
} lsm_probe_table;

int64_t lsm_version_find(const lsm_probe_table *t, const uint32_t *group_end, const uint8_t *group_sorted,
                         size_t ngroups, size_t from, const uint8_t *ukey, size_t ulen, uint64_t snap,
                         uint64_t *out);

#define LSM_MEM_HIT (-10)
struct lsm_memtable;
int64_t lsm_point_get(struct lsm_memtable *const *mems, size_t nmem, const lsm_probe_table *t,
                      const uint32_t *group_end, const uint8_t *group_sorted, size_t ngroups, size_t from,
                      const uint8_t *ukey, size_t ulen, uint64_t snap, uint64_t *out, const uint8_t **value);

#include "blockcache.h"
/* Block-cache charge of a raw payload beyond its bytes (sstable.py RAW_BLOCK_OVERHEAD, the same). */
#define LSM_BC_OVERHEAD 128
int64_t lsm_block_fetch(lsm_block_cache *c, uint64_t table, int fd, uint64_t offset, uint64_t size, int verify,
                        lsm_bc_entry **ent, uint64_t *out);
int64_t lsm_point_get_cached(struct lsm_memtable *const *mems, size_t nmem, const lsm_probe_table *t,
                             const uint32_t *group_end, const uint8_t *group_sorted, size_t ngroups,
                             size_t from, const uint8_t *ukey, size_t ulen, uint64_t snap, lsm_block_cache *c,
                             int verify, uint8_t *vbuf, size_t vcap, uint64_t *out, const uint8_t **value);

/* What lsm_get needs of a version (built once per version) and of a thread (its buffers). */
typedef struct {
    const lsm_probe_table *t;
    const uint32_t *group_end;
    const uint8_t *group_sorted;
    size_t ngroups;
    lsm_block_cache *cache;
    int verify;
} lsm_read_view;
typedef struct {
    uint8_t *vbuf;
    size_t vcap;
    const uint8_t *value;
    uint64_t out[8];
} lsm_get_scratch;
int64_t lsm_get(const lsm_read_view *v, struct lsm_memtable *const *mems, size_t nmem, size_t from,
                const uint8_t *ukey, size_t ulen, uint64_t snap, lsm_get_scratch *s);

/* A read state: a version's read view and the memtables to consult before it, newest first
 * (lsm_get_state). */
typedef struct {
    const lsm_read_view *view;
    struct lsm_memtable *const *mems;
    size_t nmem;
} lsm_read_state;
#define LSM_GET_NONE (-20)
#define LSM_GET_BLOB (-21)
#define LSM_GET_SLOW (-22)
int64_t lsm_get_state(const lsm_read_state *rs, const uint8_t *ukey, size_t ulen, uint64_t snap,
                      lsm_get_scratch *s);

#endif
