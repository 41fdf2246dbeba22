/* memtable.c: arena skiplist memtable (lsmmail/engine/memtable.py holds the pure twin). */
#ifndef LSM_MEMTABLE_H
#define LSM_MEMTABLE_H
#include <stddef.h>
#include <stdint.h>

typedef struct lsm_memtable lsm_memtable;

lsm_memtable *lsm_mem_new(uint64_t seed);
void lsm_mem_free(lsm_memtable *m);
uint64_t lsm_mem_usage(const lsm_memtable *m);
uint64_t lsm_mem_pooled_bytes(void);
uint64_t lsm_mem_live_chunk_bytes(void);
void lsm_mem_trim(void);
uint64_t lsm_mem_max_value(const lsm_memtable *m);
int64_t lsm_mem_add_rep(lsm_memtable *m, const uint8_t *rep, size_t len, uint64_t seq, uint64_t count,
                        uint64_t *out);
int lsm_mem_get(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t snapshot_seq, uint64_t *out,
                const uint8_t **value);
int64_t lsm_mem_scan(const lsm_memtable *m, int reverse, const void *after, const uint8_t *start, size_t slen,
                     const uint8_t *end, size_t elen, size_t max_n, uint8_t *buf, size_t cap, uint64_t *ends,
                     uint64_t *trailers, const void **last, uint64_t *state);
int64_t lsm_mem_flush_scan(const lsm_memtable *m, const void *after, size_t max_n, uint8_t *buf, size_t cap,
                           uint64_t *ends, const void **last, uint64_t *state);
int64_t lsm_mem_flush_blocks(const lsm_memtable *m, const void *after, size_t block_size, uint32_t ri,
                             size_t max_blocks, uint8_t *buf, size_t cap, uint64_t *block_end,
                             uint64_t *block_last, uint8_t *keys, size_t keycap, uint64_t *key_end,
                             uint64_t *trailers, size_t max_keys, const void **last, uint64_t *state);

#endif
