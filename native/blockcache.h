/* blockcache.c: a sharded LRU cache of raw (verified, decompressed) data blocks, shared by point reads and
 * scans in C (lsmmail/engine/cache.py BlockCache is the pure twin). */
#ifndef LSM_BLOCKCACHE_H
#define LSM_BLOCKCACHE_H
#include <stddef.h>
#include <stdint.h>

typedef struct lsm_block_cache lsm_block_cache;
typedef struct lsm_bc_entry lsm_bc_entry;

/* An entry's payload; valid while a reference to it is held. */
struct lsm_bc_entry {
    uint64_t table, offset, charge;
    struct lsm_bc_entry *prev, *next; /* its shard's LRU list */
    uint32_t refs, shard;
    int in_cache;
    size_t len, cap; /* payload bytes; bytes allocated for it */
    uint8_t *data;
};

lsm_block_cache *lsm_bc_new(uint64_t capacity, uint32_t nshards);
void lsm_bc_free(lsm_block_cache *c);
void lsm_bc_ref(lsm_block_cache *c);
lsm_bc_entry *lsm_bc_lookup(lsm_block_cache *c, uint64_t table, uint64_t offset);
lsm_bc_entry *lsm_bc_insert(lsm_block_cache *c, uint64_t table, uint64_t offset, const uint8_t *data,
                            size_t len, uint64_t charge);
lsm_bc_entry *lsm_bc_entry_new(size_t len);
lsm_bc_entry *lsm_bc_publish(lsm_block_cache *c, lsm_bc_entry *e, uint64_t table, uint64_t offset,
                             uint64_t charge);
void lsm_bc_release(lsm_block_cache *c, lsm_bc_entry *e);
const uint8_t *lsm_bc_data(const lsm_bc_entry *e);
size_t lsm_bc_len(const lsm_bc_entry *e);
void lsm_bc_erase(lsm_block_cache *c, uint64_t table, uint64_t offset);
uint64_t lsm_bc_erase_table(lsm_block_cache *c, uint64_t table);
void lsm_bc_clear(lsm_block_cache *c);
void lsm_bc_stats(lsm_block_cache *c, uint64_t *out);

#endif
