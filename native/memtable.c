/* memtable.c: the memtable as an arena skiplist (LevelDB's design), fed a whole write batch per call.
 *
 * Order: user key ascending (bytewise, shorter first on a tie), then trailer = seq << 8 | kind descending,
 * i.e. the engine's internal order. Nodes live in an arena and are never moved or freed before the whole
 * memtable is; each holds its trailer, lengths, `height` next pointers, then the key and value bytes.
 *
 * Concurrency: one writer at a time (the DB's group-commit leader) and any number of readers, all with
 * the GIL released. A node is fully written before a release-store links it in, and readers follow
 * links with acquire-loads, so a reader sees either the old list or the new node complete. Readers may
 * see versions newer than their snapshot; the Python side filters by sequence number, as it did with the
 * pure twin (lsmmail/engine/memtable.py).
 *
 * The batch format is the WAL payload's entries part (docs/format.md): u8 kind, varint key length, key,
 * and for kinds other than DELETE a varint value length and the value. The whole batch is checked before
 * anything is inserted, so a malformed one (LSM_ECORRUPT) leaves the memtable unchanged. RANGE_DEL
 * entries consume a sequence number but are not inserted (Python keeps them aside). A batch of 8 entries
 * or more is sorted and its entries' places searched many at once before it is linked in order (see
 * memtable_batch.c: ~2.5x faster per entry in a big memtable).
 *
 * Files: this one holds the arena and its chunk pool, the point-get filter and slots, single inserts, the
 * batch entry point and get; memtable_batch.c the sorted batch insert; memtable_scan.c scans and the
 * cursors of native/scan.c; memtable_flush.c flush scans and blocks; memtable_internal.inc the node and
 * memtable layout and the helpers they share. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS under -std=c99 */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "memtable_internal.inc"

/* Chunks come from mmap, not malloc, and full-size ones are recycled through a small process-wide pool.
 * Why mmap: a memtable is the engine's largest allocation (32 MiB by default, up to
 * 1 + max_immutable_memtables of them at once), and it is freed whole by whichever thread drops it. From
 * malloc, its 1 MiB chunks landed in the arena of whichever thread led the commit group (several arenas
 * with N writer threads), and once freed they stayed there as holes other allocations did not fill: in
 * the engine bench the process's malloc free space grew to ~100 MiB and peak RSS ratcheted up workload
 * after workload (249 MiB at the end of the chain against ~150 MiB in use). Unmapped memory goes back to
 * the OS at once.
 * Why a pool: a fresh page costs a page fault (0.35-1.8 ms per MiB on the 2-core VM, against ~0.05 ms to
 * write a MiB already mapped), so a write load reuses the chunks of the memtables its flushes drop.
 * How much it keeps: what the memtables will take before the next flush drops one. When a memtable of n
 * full-size chunks is dropped, its chunks are pooled only while pool + live chunks (every memtable's, in
 * the process) stay within 2n + 1: one memtable filling and one being flushed, the steady state of a write
 * load whose flushes keep up; the rest are unmapped. Keeping a third memtable's worth (the rule before:
 * up to POOL_MAX chunks whatever was live) held ~31 MiB more at the engine bench's peak (pool + live = 3
 * memtables at every flush). A writer that outruns its flushes (a second memtable waiting) maps fresh
 * chunks for the part beyond that, and they are unmapped when dropped. With several DBs writing in one
 * process the pool only keeps less (their live chunks count too), never more. POOL_MAX bounds the pool
 * whatever the memtable size. lsm_mem_trim (a closing DB) empties it. */
#define POOL_MAX 64
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static chunk *pool_head; /* linked through prev */
static size_t pool_len;
static size_t live_chunks; /* full-size chunks held by live memtables, process-wide (under pool_mu) */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* A child forked while another thread held pool_mu would find it locked forever (the mail import pool
 * forks workers): hold it across fork, as glibc does with its malloc arenas. */
static void pool_lock(void) { pthread_mutex_lock(&pool_mu); }
static void pool_unlock(void) { pthread_mutex_unlock(&pool_mu); }
static void pool_init(void) { pthread_atfork(pool_lock, pool_unlock, pool_unlock); }

static size_t map_size(size_t cap) {
    size_t sz = sizeof(chunk) + cap;
    return (sz + 4095) & ~(size_t)4095;
}

static chunk *new_chunk(size_t cap) {
    chunk *c = NULL;
    if (cap == CHUNK) {
        pthread_once(&pool_once, pool_init);
        pthread_mutex_lock(&pool_mu);
        c = pool_head;
        if (c) {
            pool_head = c->prev;
            pool_len--;
        }
        live_chunks++;
        pthread_mutex_unlock(&pool_mu);
    }
    if (!c) {
        void *p = mmap(NULL, map_size(cap), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            if (cap == CHUNK) {
                pthread_mutex_lock(&pool_mu);
                live_chunks--;
                pthread_mutex_unlock(&pool_mu);
            }
            return NULL;
        }
        c = p;
    }
    c->cap = cap;
    c->used = 0;
    c->prev = NULL;
    return c;
}

/* Drop a memtable's chunk list (linked through prev): pool full-size chunks within the budget above,
 * unmap the rest (outside the lock: munmap of 1 MiB takes ~20-50 us). */
static void free_chunks(chunk *c) {
    size_t n = 0;
    for (const chunk *x = c; x; x = x->prev) n += x->cap == CHUNK;
    size_t budget = 2 * n + 1;
    chunk *unmap = NULL;
    pthread_mutex_lock(&pool_mu);
    while (c) {
        chunk *p = c->prev;
        if (c->cap == CHUNK) {
            live_chunks--;
            if (pool_len < POOL_MAX && pool_len + live_chunks < budget) {
                c->prev = pool_head;
                pool_head = c;
                pool_len++;
                c = p;
                continue;
            }
        }
        c->prev = unmap;
        unmap = c;
        c = p;
    }
    pthread_mutex_unlock(&pool_mu);
    while (unmap) {
        chunk *p = unmap->prev;
        munmap(unmap, map_size(unmap->cap));
        unmap = p;
    }
}

void *lsm_mem_arena_alloc(lsm_memtable *m, size_t size) {
    size = (size + 7) & ~(size_t)7;
    if (size > CHUNK / 4) {
        /* A big node gets a chunk of its own, kept behind the current one so its free space stays in use. */
        chunk *c = new_chunk(size);
        if (!c) return NULL;
        c->used = size;
        c->prev = m->cur->prev;
        m->cur->prev = c;
        m->used_bytes += size + sizeof(chunk);
        return c->data;
    }
    if (m->cur->cap - m->cur->used < size) {
        chunk *c = new_chunk(CHUNK);
        if (!c) return NULL;
        c->prev = m->cur;
        m->cur = c;
        m->used_bytes += sizeof(chunk);
    }
    void *p = m->cur->data + m->cur->used;
    m->cur->used += size;
    m->used_bytes += size;
    return p;
}

lsm_memtable *lsm_mem_new(uint64_t seed) {
    lsm_memtable *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->cur = new_chunk(CHUNK);
    if (!m->cur) {
        free(m);
        return NULL;
    }
    m->used_bytes = sizeof(*m) + sizeof(chunk);
    m->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    m->height = 1;
    m->head = lsm_mem_arena_alloc(m, sizeof(node) + MAX_HEIGHT * sizeof(node *));
    memset(m->head, 0, sizeof(node) + MAX_HEIGHT * sizeof(node *));
    m->head->height = MAX_HEIGHT;
    return m;
}

void lsm_mem_free(lsm_memtable *m) {
    if (!m) return;
    free_chunks(m->cur);
    free(m->filt);
    free(m->scratch);
    free(m);
}

uint64_t lsm_mem_usage(const lsm_memtable *m) { return m->used_bytes; }

void lsm_mem_trim(void) {
    /* Give the OS back the free memory malloc keeps (all arenas) and the chunk pool. A closed DB calls
     * this after dropping its memtables and block cache, whose blocks are otherwise kept by the malloc
     * arenas of the threads that read them (~60 MiB after the engine bench's read phase). malloc_trim is
     * glibc's; elsewhere only the pool is emptied. */
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool_mu);
    chunk *c = pool_head;
    pool_head = NULL;
    pool_len = 0;
    pthread_mutex_unlock(&pool_mu);
    while (c) {
        chunk *p = c->prev;
        munmap(c, map_size(c->cap));
        c = p;
    }
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

uint64_t lsm_mem_pooled_bytes(void) {
    /* Bytes of freed chunks kept for the next memtables (at most POOL_MAX chunks of CHUNK bytes). */
    pthread_mutex_lock(&pool_mu);
    uint64_t n = pool_len;
    pthread_mutex_unlock(&pool_mu);
    return n * CHUNK;
}

uint64_t lsm_mem_live_chunk_bytes(void) {
    /* Bytes of full-size chunks held by live memtables, process-wide (the pool's budget counts them). */
    pthread_mutex_lock(&pool_mu);
    uint64_t n = live_chunks;
    pthread_mutex_unlock(&pool_mu);
    return n * CHUNK;
}

uint64_t lsm_mem_max_value(const lsm_memtable *m) { return m->max_vlen; }

/* The point-get filter and slots (their design and layout are in memtable_internal.inc). */

static inline uint64_t mem_mix(uint64_t x) {
    /* murmur3's 64-bit finaliser */
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

uint64_t lsm_mem_key_hash(const uint8_t *k, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0x100000001B3ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, k, 8);
        h = (h ^ mem_mix(w)) * 0x9E3779B97F4A7C15ull;
        h = (h << 27) | (h >> 37);
        k += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)k[i] << (8 * i);
    return mem_mix(h ^ w ^ 0x2545F4914F6CDD1Dull);
}
/* The one writer adds each key (hash h) before linking its node. No filter (out of memory) only means no
 * skip. */
void lsm_mem_filter_add(lsm_memtable *m, uint64_t h) {
    uint64_t *f = m->filt;
    if (!f) {
        f = calloc(1, MEM_POINT_BYTES);
        if (!f) return;
        m->used_bytes += MEM_POINT_BYTES;
        __atomic_store_n(&m->filt, f, __ATOMIC_RELEASE);
    }
    uint64_t *line = f + mem_filter_line(h), g = h * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < MEM_FILTER_K; i++) {
        unsigned b = mem_filter_bit(g, i);
        uint64_t *p = &line[b >> 6];
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) | (uint64_t)1 << (b & 63), __ATOMIC_RELAXED);
    }
}

/* 0 if the memtable holds no version of the key of hash h; 1 if it may. */
static inline int mem_filter_may(const uint64_t *f, uint64_t h) {
    if (!f) return 1; /* empty, or the filter could not be allocated: search */
    const uint64_t *line = f + mem_filter_line(h);
    uint64_t g = h * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < MEM_FILTER_K; i++) {
        unsigned b = mem_filter_bit(g, i);
        if (!((__atomic_load_n(&line[b >> 6], __ATOMIC_RELAXED) >> (b & 63)) & 1)) return 0;
    }
    return 1;
}
/* Through the slot of hash h: 1 with *found = the newest version of key with trailer <= want, 0 when the
 * key has none (the slot names its newest version, and no older one is visible), -1 when the slot does
 * not name key (the caller searches the skiplist). */
static int mem_point_get(const uint64_t *f, uint64_t h, const uint8_t *key, size_t klen, uint64_t want,
                         const node **found) {
    if (!f) return -1;
    const node *n = __atomic_load_n(&mem_slots((uint64_t *)f)[h & (MEM_SLOTS - 1)], __ATOMIC_ACQUIRE);
    if (!n || n->klen != klen || memcmp(key_of(n), key, klen) != 0) return -1;
    /* Level 0 holds a key's versions together, newest first. */
    while (n->trailer > want) {
        n = load(&n->next[0]);
        if (!n || n->klen != klen || memcmp(key_of(n), key, klen) != 0) return 0;
    }
    *found = n;
    return 1;
}

/* First node >= (key, trailer), or NULL; fills prev[] with the last node < it on every level. */
node *lsm_mem_find_ge(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer, node **prev) {
    node *x = m->head;
    int level = __atomic_load_n(&m->height, __ATOMIC_RELAXED) - 1;
    for (;;) {
        node *nx = load(&x->next[level]);
        if (nx && cmp_node(nx, key, klen, trailer) < 0) {
            x = nx;
        } else {
            if (prev) prev[level] = x;
            if (level == 0) return nx;
            level--;
        }
    }
}

static int insert(lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer, const uint8_t *val,
                  size_t vlen) {
    node *prev[MAX_HEIGHT];
    uint64_t kh = lsm_mem_key_hash(key, klen);
    mem_point_prefetch(m, kh);
    lsm_mem_find_ge(m, key, klen, trailer, prev);
    int h = random_height(m);
    if (h > m->height) {
        for (int i = m->height; i < h; i++) prev[i] = m->head;
        /* Readers that see the new height before the node find head->next[i] NULL there: still correct. */
        __atomic_store_n(&m->height, h, __ATOMIC_RELAXED);
    }
    node *n = lsm_mem_arena_alloc(m, sizeof(node) + (size_t)h * sizeof(node *) + klen + vlen);
    if (!n) return LSM_ESPACE;
    n->trailer = trailer;
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    n->height = (uint32_t)h;
    n->pad = 0;
    memcpy((uint8_t *)&n->next[h], key, klen);
    if (vlen) memcpy((uint8_t *)&n->next[h] + klen, val, vlen);
    lsm_mem_filter_add(m, kh);
    for (int i = 0; i < h; i++) {
        n->next[i] = __atomic_load_n(&prev[i]->next[i], __ATOMIC_RELAXED);
        __atomic_store_n(&prev[i]->next[i], n, __ATOMIC_RELEASE);
    }
    mem_point_set(m, kh, n);
    m->count++;
    if (vlen > m->max_vlen) m->max_vlen = vlen;
    return 0;
}

static int get_len(const uint8_t *rep, size_t len, size_t *pos, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= len) return -1;
        uint8_t b = rep[(*pos)++];
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* One entry at *pos: its kind, key and value spans. -1 if malformed. */
int lsm_mem_parse_entry(const uint8_t *rep, size_t len, size_t *pos, uint8_t *kind, size_t *koff,
                        uint64_t *klen, size_t *voff, uint64_t *vlen) {
    if (*pos >= len) return -1;
    *kind = rep[(*pos)++];
    if (*kind != KIND_DELETE && *kind != KIND_PUT && *kind != KIND_RANGE_DEL) return -1;
    if (get_len(rep, len, pos, klen) || *klen == 0 || *klen > MAX_KEY || *klen > len - *pos) return -1;
    *koff = *pos;
    *pos += *klen;
    *vlen = 0;
    *voff = *pos;
    if (*kind != KIND_DELETE) {
        if (get_len(rep, len, pos, vlen) || *vlen > len - *pos || *vlen > 0xFFFFFFFFull) return -1;
        *voff = *pos;
        *pos += *vlen;
        if (*kind == KIND_RANGE_DEL) {
            /* The end key: a valid key sorting after the start (decode_batch's rule). */
            if (*vlen == 0 || *vlen > MAX_KEY) return -1;
            size_t l = *klen < *vlen ? (size_t)*klen : (size_t)*vlen;
            int c = memcmp(rep + *koff, rep + *voff, l);
            if (c > 0 || (c == 0 && *klen >= *vlen)) return -1;
        }
    }
    return 0;
}

/* One search per entry: batches too small to pay for the sort (SORTED_MIN), and the fallback when the
 * sort arrays cannot be allocated. */
int64_t lsm_mem_add_each(lsm_memtable *m, const uint8_t *rep, size_t len, uint64_t seq, uint64_t count,
                         uint64_t *out) {
    uint8_t kind;
    size_t pos = 0, koff, voff;
    uint64_t klen, vlen, rd = 0, bytes = 0;
    for (uint64_t i = 0; i < count; i++)
        if (lsm_mem_parse_entry(rep, len, &pos, &kind, &koff, &klen, &voff, &vlen)) return LSM_ECORRUPT;
    if (pos != len) return LSM_ECORRUPT;
    pos = 0;
    int64_t added = 0;
    for (uint64_t i = 0; i < count; i++, seq++) {
        lsm_mem_parse_entry(rep, len, &pos, &kind, &koff, &klen, &voff, &vlen);
        if (kind == KIND_RANGE_DEL) {
            rd++;
            continue;
        }
        if (insert(m, rep + koff, klen, seq << 8 | kind, rep + voff, vlen)) return LSM_ESPACE;
        bytes += klen + vlen;
        added++;
    }
    out[0] = rd;
    out[1] = bytes;
    return added;
}

int64_t lsm_mem_add_rep(lsm_memtable *m, const uint8_t *rep, size_t len, uint64_t seq, uint64_t count,
                        uint64_t *out) {
    /* Insert `count` entries encoded in rep[0:len), the i-th at sequence seq + i. Returns how many were
     * inserted; out[0] = the number of RANGE_DEL entries (not inserted), out[1] = the key and value
     * bytes of the inserted ones. Batches of SORTED_MIN entries or more are inserted in internal order
     * (lsm_mem_add_sorted, memtable_batch.c); the nodes, and what any reader can see once the call
     * returns, are the same. */
    if (count && (seq > ((uint64_t)1 << 56) - count)) return LSM_EINVAL;
    if (count < SORTED_MIN) return lsm_mem_add_each(m, rep, len, seq, count, out);
    return lsm_mem_add_sorted(m, rep, len, seq, count, out);
}

int lsm_mem_get(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t snapshot_seq, uint64_t *out,
                const uint8_t **value) {
    /* The newest version of key with seq <= snapshot_seq: returns 1 and out[0] = trailer, out[1] = value
     * length, *value = its bytes (valid while the memtable lives); 0 if there is none. */
    const uint64_t *f = __atomic_load_n(&m->filt, __ATOMIC_ACQUIRE);
    uint64_t h = f ? lsm_mem_key_hash(key, klen) : 0;
    if (!mem_filter_may(f, h)) return 0;
    if (snapshot_seq >= ((uint64_t)1 << 56)) snapshot_seq = ((uint64_t)1 << 56) - 1;
    uint64_t want = snapshot_seq << 8 | 0xFF;
    const node *n = NULL;
    int r = mem_point_get(f, h, key, klen, want, &n);
    if (r == 0) return 0;
    if (r < 0) {
        n = lsm_mem_find_ge(m, key, klen, want, NULL);
        if (!n || n->klen != klen || memcmp(key_of(n), key, klen) != 0) return 0;
    }
    out[0] = n->trailer;
    out[1] = n->vlen;
    *value = val_of(n);
    return 1;
}
