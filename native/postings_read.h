/* postings_read.c: the read side of search posting lists (lsmmail/search/_postings_read.py has the pure
 * twins): decoding a block's ordinals into user-wide ranks, and the newest-first AND of sorted rank lists. */
#ifndef LSM_POSTINGS_READ_H
#define LSM_POSTINGS_READ_H
#include <stddef.h>
#include <stdint.h>

int64_t lsm_post_ranks(const uint8_t *blk, size_t len, uint64_t table_len, uint32_t base, uint32_t *out,
                       size_t cap);
int64_t lsm_post_and(const uint32_t *const *pos, const size_t *pos_len, size_t npos,
                     const uint32_t *const *neg, const size_t *neg_len, size_t nneg, uint32_t lo, uint32_t hi,
                     uint32_t *out, size_t want);
int64_t lsm_post_phrase(const uint8_t *buf, const uint64_t *ends, size_t k, uint64_t table_len,
                        const uint32_t *cand, size_t ncand, uint64_t *run, uint32_t *ords, uint64_t *posbuf,
                        uint32_t *out);

#endif
