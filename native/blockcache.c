/* A block cache in C (docs/format.md "SSTable": the raw payload of a data block, verified and
 * decompressed), so a point read that hits it and a scan moving to its next block never come back to
 * Python. lsmmail/engine/cache.py's BlockCache is the pure twin (same contract with one shard).
 *
 * Keys are (table number, block offset); an entry is charged its `charge` (the caller's: payload bytes
 * plus an overhead) against the capacity. The cache is split into shards by key hash, each with its own
 * mutex (cffi releases the GIL, so gets and scans on several threads enter at once) and its own LRU list
 * and capacity (capacity / nshards). Entries are reference counted: the cache holds one reference while
 * an entry is in it, and every lsm_bc_lookup / lsm_bc_insert / lsm_bc_publish hands the caller one more,
 * given back with lsm_bc_release. An entry evicted or erased while a scan still reads it leaves the
 * cache at once (its charge no longer counts) and is freed by the last release, never under a reader.
 *
 * Entries that a caller allocates (lsm_bc_entry_new) and never publishes -- no cache, or a block that
 * failed its checks -- are private: one reference, no lock needed, freed by lsm_bc_release.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockcache.h"

/* The map of a shard: open addressing with linear probing over a power-of-two array of slots, each a
 * key's full 64-bit hash beside its entry, kept at most half full. A probe compares hashes in the slot
 * array (16 bytes a slot: 128 KiB for the ~3,600 8 KiB blocks of a 32 MiB cache) and touches an entry
 * only when its hash matches. The chained map before it followed each bucket's list through the entries'
 * own headers, one cold cache line per link: with 200 MB of data behind a 32 MiB cache, nearly every
 * read missed the cache and its lookup, insert and eviction spent ~10% of a point read walking chains
 * (perf). */
typedef struct {
    uint64_t h;
    lsm_bc_entry *e; /* NULL: an empty slot */
} slot;

typedef struct {
    pthread_mutex_t mu;
    slot *slots;
    size_t nslots, count;
    uint64_t usage, capacity, hits, misses;
    lsm_bc_entry lru; /* sentinel: lru.next is the least recently used, lru.prev the most */
} shard;

struct lsm_block_cache {
    uint32_t refs; /* the owner's (lsm_bc_new) plus one per holder that may outlive it (lsm_bc_ref) */
    uint32_t nshards;
    uint64_t capacity;
    shard *shards;
};

/* Marks an entry that went through lsm_bc_publish, so its references are counted under its shard's lock. */
#define SHARED_FLAG 0x80000000u

static inline uint64_t mix(uint64_t table, uint64_t offset) {
    uint64_t h = table * 0x9E3779B97F4A7C15ull ^ (offset + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    return h;
}

lsm_block_cache *lsm_bc_new(uint64_t capacity, uint32_t nshards) {
    /* A cache of `capacity` bytes of charge in `nshards` shards (>= 1). NULL if out of memory. */
    if (nshards == 0) nshards = 1;
    lsm_block_cache *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->shards = calloc(nshards, sizeof(shard));
    if (!c->shards) {
        free(c);
        return NULL;
    }
    c->refs = 1;
    c->nshards = nshards;
    c->capacity = capacity;
    for (uint32_t i = 0; i < nshards; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->capacity = capacity / nshards + (i < capacity % nshards ? 1 : 0);
        s->lru.next = s->lru.prev = &s->lru;
    }
    return c;
}

/* Recycled entries. A cache-missing read allocates an entry for its block and, in a cache smaller than the
 * data, evicts (frees) one of the same size: glibc serves these 8-9 KiB chunks from its large bins, and
 * malloc, free and their helpers took ~10% of a reverse scan's time and ~4% of a point read's (perf, 200
 * MB of 1 KiB values, 32 MiB cache). Freed block-sized entries wait here, most recent last, for the next
 * allocation of a size they fit: at most POOL_SLOTS of them (<= 2 MiB) stay allocated after every cache
 * is gone. An entry's capacity may exceed its payload by up to 2 KiB (its size class, or a pooled entry
 * one class up) that its charge does not count: ~6-12% over the charges for 8 KiB blocks (peak RSS of
 * the engine bench 193-198 MiB, RocksDB's 201-221). Off under AddressSanitizer, so that it still sees
 * every use after free. */
#define POOL_SLOTS 32
#define POOL_MIN (2 * 1024)
#define POOL_MAX (64 * 1024)
#define POOL_ROUND 1024 /* capacities are rounded up to this, so blocks of nearby sizes share entries */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_ON 0
#else
#define POOL_ON 1
#endif

static pthread_mutex_t g_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static lsm_bc_entry *g_pool[POOL_SLOTS];
static size_t g_pool_n;

static size_t round_cap(size_t len) { return (len + POOL_ROUND - 1) / POOL_ROUND * POOL_ROUND; }

/* A pooled entry with room for len bytes and not a size class more (of the last 8 freed), or NULL. */
static lsm_bc_entry *pool_take(size_t len) {
    lsm_bc_entry *e = NULL;
    size_t most = round_cap(len) + POOL_ROUND;
    pthread_mutex_lock(&g_pool_mu);
    for (size_t i = g_pool_n; i > 0 && i + 8 > g_pool_n; i--) {
        lsm_bc_entry *x = g_pool[i - 1];
        if (x->cap >= len && x->cap <= most) {
            e = x;
            g_pool[i - 1] = g_pool[--g_pool_n];
            break;
        }
    }
    pthread_mutex_unlock(&g_pool_mu);
    return e;
}

static void entry_free(lsm_bc_entry *e) {
    if (POOL_ON && e->cap >= POOL_MIN && e->cap <= POOL_MAX) {
        pthread_mutex_lock(&g_pool_mu);
        if (g_pool_n < POOL_SLOTS) {
            g_pool[g_pool_n++] = e;
            e = NULL;
        }
        pthread_mutex_unlock(&g_pool_mu);
    }
    free(e);
}

static void unref(lsm_bc_entry *e) {
    if (--e->refs == 0) entry_free(e);
}

/* The slot holding (table, offset) of hash h, or the empty slot where it would go; SIZE_MAX if the shard
 * has no slots yet. */
static size_t find(const shard *s, uint64_t table, uint64_t offset, uint64_t h) {
    if (!s->nslots) return SIZE_MAX;
    size_t mask = s->nslots - 1, i = h & mask;
    for (;; i = (i + 1) & mask) {
        const slot *x = &s->slots[i];
        if (!x->e || (x->h == h && x->e->table == table && x->e->offset == offset)) return i;
    }
}

/* The slot holding e itself (which is in the map under hash h). */
static size_t slot_of(const shard *s, const lsm_bc_entry *e, uint64_t h) {
    size_t mask = s->nslots - 1, i = h & mask;
    while (s->slots[i].e != e) i = (i + 1) & mask;
    return i;
}

/* Empty slot i, moving later entries of its probe run back so that every entry stays reachable from its
 * home slot without tombstones. */
static void clear_slot(shard *s, size_t i) {
    size_t mask = s->nslots - 1;
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        if (!s->slots[j].e) break;
        size_t home = s->slots[j].h & mask;
        /* The entry at j may fill the hole at i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        s->slots[i] = s->slots[j];
        i = j;
    }
    s->slots[i].e = NULL;
}

/* Take the entry in slot i out of its shard's map and LRU list (the lock is held) and drop the cache's
 * reference. */
static void remove_entry(shard *s, size_t i) {
    lsm_bc_entry *e = s->slots[i].e;
    clear_slot(s, i);
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->in_cache = 0;
    s->count--;
    s->usage -= e->charge;
    unref(e);
}

void lsm_bc_ref(lsm_block_cache *c) {
    /* One more holder of c (a scan that holds entries): lsm_bc_free then only drops a reference, so
     * entries can be released in any order against the owner's free (Python's garbage collector may
     * free the cache before a scan that still holds its blocks). */
    if (c) __sync_add_and_fetch(&c->refs, 1);
}

void lsm_bc_free(lsm_block_cache *c) {
    /* Drop a reference to the cache (the owner's, or one from lsm_bc_ref); the last one frees it and
     * its entries. Callers release their entries before their reference. */
    if (!c || __sync_sub_and_fetch(&c->refs, 1) != 0) return;
    lsm_bc_clear(c);
    for (uint32_t i = 0; i < c->nshards; i++) {
        pthread_mutex_destroy(&c->shards[i].mu);
        free(c->shards[i].slots);
    }
    free(c->shards);
    free(c);
}

lsm_bc_entry *lsm_bc_entry_new(size_t len) {
    /* A private entry with room for len payload bytes (e->data), holding one reference. NULL if out of
     * memory. */
    size_t cap = len ? len : 1;
    lsm_bc_entry *e = NULL;
    if (POOL_ON && len >= POOL_MIN && len <= POOL_MAX) {
        cap = round_cap(len);
        e = pool_take(len);
        if (e) cap = e->cap;
    }
    if (!e && !(e = malloc(sizeof(lsm_bc_entry) + cap))) return NULL;
    memset(e, 0, sizeof(*e));
    e->refs = 1;
    e->len = len;
    e->cap = cap;
    e->data = (uint8_t *)(e + 1);
    return e;
}

static shard *shard_of(lsm_block_cache *c, uint64_t h) { return &c->shards[(h >> 40) % c->nshards]; }

lsm_bc_entry *lsm_bc_lookup(lsm_block_cache *c, uint64_t table, uint64_t offset) {
    /* The entry under (table, offset), now the most recently used of its shard, with a reference for
     * the caller; or NULL. Counts a hit or a miss. */
    uint64_t h = mix(table, offset);
    shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    size_t i = find(s, table, offset, h);
    lsm_bc_entry *e = i == SIZE_MAX ? NULL : s->slots[i].e;
    if (e) {
        e->refs++;
        e->prev->next = e->next;
        e->next->prev = e->prev;
        e->next = &s->lru;
        e->prev = s->lru.prev;
        s->lru.prev->next = e;
        s->lru.prev = e;
        s->hits++;
    } else {
        s->misses++;
    }
    pthread_mutex_unlock(&s->mu);
    return e;
}

/* Double the shard's slots (64 at first). -1 if out of memory (the map is unchanged). */
static int grow(shard *s) {
    size_t n = s->nslots ? s->nslots * 2 : 64, mask = n - 1;
    slot *a = calloc(n, sizeof(*a));
    if (!a) return -1;
    for (size_t i = 0; i < s->nslots; i++) {
        if (!s->slots[i].e) continue;
        size_t j = s->slots[i].h & mask;
        while (a[j].e) j = (j + 1) & mask;
        a[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = a;
    s->nslots = n;
    return 0;
}

lsm_bc_entry *lsm_bc_publish(lsm_block_cache *c, lsm_bc_entry *e, uint64_t table, uint64_t offset,
                             uint64_t charge) {
    /* Put the private entry e (from lsm_bc_entry_new, holding the caller's one reference, which it
     * keeps) under (table, offset) with `charge`, replacing what was there, then evict the least
     * recently used entries of its shard until the shard's charges fit its capacity. An entry whose
     * charge exceeds the shard's capacity is not stored (what was under the key is still dropped).
     * With c NULL, nothing happens. Returns e. */
    e->table = table;
    e->offset = offset;
    e->charge = charge;
    if (!c) return e;
    uint64_t h = mix(table, offset);
    uint32_t si = (uint32_t)((h >> 40) % c->nshards);
    shard *s = &c->shards[si];
    pthread_mutex_lock(&s->mu);
    e->shard = si | SHARED_FLAG;
    size_t i = find(s, table, offset, h);
    if (i != SIZE_MAX && s->slots[i].e) remove_entry(s, i);
    if (charge <= s->capacity && ((s->count + 1) * 2 <= s->nslots || grow(s) == 0)) {
        i = find(s, table, offset, h);
        s->slots[i].h = h;
        s->slots[i].e = e;
        e->next = &s->lru;
        e->prev = s->lru.prev;
        s->lru.prev->next = e;
        s->lru.prev = e;
        e->in_cache = 1;
        e->refs++;
        s->count++;
        s->usage += charge;
        while (s->usage > s->capacity) {
            lsm_bc_entry *old = s->lru.next;
            remove_entry(s, slot_of(s, old, mix(old->table, old->offset)));
        }
        /* The next eviction unlinks the oldest entry and stores into its successor's header, a cold line
         * in a cache smaller than the data: fetch it now, while this miss's reader goes on (that store
         * took ~2% of a cache-missing point read; gets +3-6%, reverse scans +2-4%). */
        if (s->lru.next != &s->lru) __builtin_prefetch(s->lru.next->next, 1);
    }
    pthread_mutex_unlock(&s->mu);
    return e;
}

lsm_bc_entry *lsm_bc_insert(lsm_block_cache *c, uint64_t table, uint64_t offset, const uint8_t *data,
                            size_t len, uint64_t charge) {
    /* lsm_bc_publish of a copy of data[0:len]; the caller holds a reference to the result. NULL if out
     * of memory. */
    lsm_bc_entry *e = lsm_bc_entry_new(len);
    if (!e) return NULL;
    if (len) memcpy(e->data, data, len);
    return lsm_bc_publish(c, e, table, offset, charge);
}

void lsm_bc_release(lsm_block_cache *c, lsm_bc_entry *e) {
    /* Give back one reference to e (NULL: nothing); the last one frees it. */
    if (!e) return;
    if (c && (e->shard & SHARED_FLAG)) {
        shard *s = &c->shards[e->shard & ~SHARED_FLAG];
        pthread_mutex_lock(&s->mu);
        unref(e);
        pthread_mutex_unlock(&s->mu);
    } else {
        unref(e);
    }
}

const uint8_t *lsm_bc_data(const lsm_bc_entry *e) { return e->data; }
size_t lsm_bc_len(const lsm_bc_entry *e) { return e->len; }

void lsm_bc_erase(lsm_block_cache *c, uint64_t table, uint64_t offset) {
    /* Drop the entry under (table, offset), if any (readers holding it keep it until they release). */
    uint64_t h = mix(table, offset);
    shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    size_t i = find(s, table, offset, h);
    if (i != SIZE_MAX && s->slots[i].e) remove_entry(s, i);
    pthread_mutex_unlock(&s->mu);
}

static uint64_t erase_where(lsm_block_cache *c, int all, uint64_t table) {
    /* Walks each shard's LRU list, which holds exactly its map's entries (removal moves slots about, so
     * a walk of the slot array could skip or revisit entries). */
    uint64_t n = 0;
    for (uint32_t i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        lsm_bc_entry *e = s->lru.next;
        while (e != &s->lru) {
            lsm_bc_entry *nx = e->next;
            if (all || e->table == table) {
                remove_entry(s, slot_of(s, e, mix(e->table, e->offset)));
                n++;
            }
            e = nx;
        }
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

uint64_t lsm_bc_erase_table(lsm_block_cache *c, uint64_t table) {
    /* Drop every entry of `table` (its file is closed or deleted); returns how many. O(entries). */
    return erase_where(c, 0, table);
}

void lsm_bc_clear(lsm_block_cache *c) { erase_where(c, 1, 0); }

void lsm_bc_stats(lsm_block_cache *c, uint64_t *out) {
    /* out[0..4] = hits, misses, usage (sum of charges held), capacity, entries. */
    memset(out, 0, 5 * sizeof(uint64_t));
    out[3] = c->capacity;
    for (uint32_t i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        out[0] += s->hits;
        out[1] += s->misses;
        out[2] += s->usage;
        out[4] += s->count;
        pthread_mutex_unlock(&s->mu);
    }
}
