/* compact.c: the per-entry loop of a compaction (merge, drop hidden versions, encode data blocks). */
#ifndef LSM_COMPACT_H
#define LSM_COMPACT_H

#include <stddef.h>
#include <stdint.h>

typedef struct lsm_compactor lsm_compactor;
lsm_compactor *lsm_cmp_new(size_t k, const uint64_t *snaps, size_t nsnap, int bottommost, size_t block_size,
                           uint32_t ri);
void lsm_cmp_free(lsm_compactor *m);
int lsm_cmp_feed(lsm_compactor *m, uint32_t run, const uint8_t *blk, size_t len);
int64_t lsm_cmp_step(lsm_compactor *m, uint8_t *buf, size_t cap, uint64_t *block_end, uint64_t *block_nent,
                     uint64_t *block_vbytes, size_t max_blocks, uint8_t *keys, size_t keycap, uint64_t *key_end, uint64_t *trailers,
                     size_t max_keys, uint64_t *state);

#endif
