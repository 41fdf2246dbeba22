/* scan.c: a range scan's merge of memtables and SSTable blocks into visible entries, a page per call
 * (lsmmail/engine/scan_native.py drives it; the pure twin is iterators.merge_entries + visible_entries). */
#ifndef LSM_SCAN_H
#define LSM_SCAN_H
#include <stddef.h>
#include <stdint.h>

#include "pointget.h"

struct lsm_memtable;

/* Read-only skiplist cursors, defined at the end of memtable.c. */
const void *lsm_mem_cursor_ge(const struct lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer);
const void *lsm_mem_cursor_lt(const struct lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer);
const void *lsm_mem_cursor_next(const void *n);
size_t lsm_mem_cursor_back(const struct lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer,
                           const void **out, size_t want, size_t max);
void lsm_mem_cursor_read(const void *n, const uint8_t **key, size_t *klen, uint64_t *trailer,
                         const uint8_t **value, size_t *vlen);

typedef struct lsm_scan lsm_scan;

#define LSM_SCAN_MORE 0
#define LSM_SCAN_END 1
#define LSM_SCAN_NEED 2
/* lsm_scan_next: a table-mode source's block read failed (pointget.h's LSM_EIO) */
#define LSM_SCAN_EIO (-4)

lsm_scan *lsm_scan_new(size_t nsrc, int reverse, uint64_t snap, const uint8_t *start, size_t slen,
                       const uint8_t *end, size_t elen);
void lsm_scan_free(lsm_scan *s);
int lsm_scan_add_tombstone(lsm_scan *s, uint64_t seq, const uint8_t *start, size_t slen, const uint8_t *end,
                           size_t elen);
int lsm_scan_set_mem(lsm_scan *s, size_t i, const struct lsm_memtable *m);
int64_t lsm_scan_set_block(lsm_scan *s, size_t i, const uint8_t *blk, size_t len);
void lsm_scan_set_done(lsm_scan *s, size_t i);
void lsm_scan_set_page_min(lsm_scan *s, size_t n);
int64_t lsm_scan_set_view(lsm_scan *s, size_t first, const lsm_read_view *v, uint64_t *err);
struct lsm_block_cache;
int64_t lsm_scan_set_table(lsm_scan *s, size_t i, struct lsm_block_cache *c, uint64_t table, int fd, int verify,
                           const uint64_t *boff, const uint64_t *bsize, uint64_t nblocks, uint64_t bi,
                           uint64_t *err);
int64_t lsm_scan_next(lsm_scan *s, size_t max_n, uint8_t *buf, size_t cap, uint64_t *offs, uint8_t *kinds,
                      char *fmt, size_t fmtcap, uint64_t *state);

#endif
