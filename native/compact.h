/* compact.c: the per-entry loop of a compaction (merge, drop hidden versions, blob reference accounting and
 * relocation, encode data blocks). */
#ifndef LSM_COMPACT_H
#define LSM_COMPACT_H

#include <stddef.h>
#include <stdint.h>

typedef struct lsm_compactor lsm_compactor;
/* Output buffers of lsm_cmp_step and how much of each is filled (see lsm_cmp_step). blobs and relocs
 * hold at most max_keys rows (4 words per relocs row). */
typedef struct {
    uint8_t *buf;
    size_t cap, pos;
    uint64_t *block_end, *block_nent, *block_vbytes, *block_nblobs;
    size_t max_blocks, nb;
    uint8_t *keys;
    size_t keycap, kpos;
    uint64_t *key_end, *trailers;
    size_t max_keys, ne;
    uint64_t *blobs;
    size_t nblobs;
    uint64_t *relocs;
    size_t nrelocs;
    uint8_t *spill;
    size_t spillcap, spos;
} lsm_cmp_out;

lsm_compactor *lsm_cmp_new(size_t k, const uint64_t *snaps, size_t nsnap, int bottommost, size_t block_size,
                           uint32_t ri, const uint64_t *tomb_seqs, const uint8_t *tomb_keys,
                           const uint64_t *tomb_key_end, size_t ntomb, const uint64_t *relocate,
                           size_t nrelocate, uint64_t reloc_number, uint64_t spill_min);
void lsm_cmp_free(lsm_compactor *m);
int lsm_cmp_feed(lsm_compactor *m, uint32_t run, const uint8_t *blk, size_t len);
int lsm_cmp_feed_flat(lsm_compactor *m, uint32_t run, const uint8_t *buf, size_t len, const uint64_t *ends,
                      size_t n);
void lsm_cmp_set_hash(void *xxh3_64bits);
int lsm_cmp_frame_spill(lsm_compactor *m);
int64_t lsm_cmp_step(lsm_compactor *m, lsm_cmp_out *o, uint64_t *state);
int64_t lsm_cmp_garbage(const lsm_compactor *m, uint64_t *nums, uint64_t *counts, uint64_t *bytes, size_t cap);

#endif
