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
 * "Batch insert" below: ~2.5x faster per entry in a big memtable). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS under -std=c99 */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "lsm_native.h"
#include "memtable.h"
#include "lsm_varint.h"

#define MAX_HEIGHT 16
/* 1 MiB chunks: ~1,000 nodes of 1 KiB values per malloc; nodes above a quarter chunk get their own. */
#define CHUNK ((size_t)1 << 20)
#define MAX_KEY 65535u

#define KIND_DELETE 0
#define KIND_PUT 1
#define KIND_RANGE_DEL 3

typedef struct node {
    uint64_t trailer;
    uint32_t klen;
    uint32_t vlen;
    uint32_t height;
    uint32_t pad;
    struct node *next[];
} node;

typedef struct chunk {
    struct chunk *prev;
    size_t cap, used;
    uint8_t data[];
} chunk;

struct lsm_memtable {
    chunk *cur;
    uint64_t used_bytes; /* bytes handed out by the arena plus chunk headers: what this memtable holds */
    uint64_t rng;
    uint64_t count;
    uint64_t max_vlen;
    int height;
    node *head;
    uint64_t *filt; /* point-get filter, then point slots (mem_point_*); NULL until the first insert */
    void *scratch;  /* lsm_mem_add_rep's sort arrays, kept between batches (bounded: SCRATCH_KEEP) */
    size_t scratch_cap;
};

static inline const uint8_t *key_of(const node *n) { return (const uint8_t *)&n->next[n->height]; }
static inline const uint8_t *val_of(const node *n) { return key_of(n) + n->klen; }
static inline node *load(node *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

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

static void *arena_alloc(lsm_memtable *m, size_t size) {
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
    m->head = arena_alloc(m, sizeof(node) + MAX_HEIGHT * sizeof(node *));
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

/* Point-get filter: a blocked bloom filter over the user keys of the memtable, so a get of a key the
 * memtable does not hold (most gets: a 32 MiB memtable holds ~30k of the bench's 200k keys) skips the
 * skiplist search. That search is ~15-25 dependent cache misses over nodes spread through tens of MiB
 * (~23% of a missing key's get, ~20% of a present key's in the engine bench). One 64-byte line per key,
 * MEM_FILTER_K bits in it: a probe is one hash of the key and one cache line.
 * Fixed size (MEM_FILTER_BYTES, allocated at the first insert): 1M bits hold ~30k keys of 1 KiB values at
 * ~35 bits per key (false positives ~0.01%) and ~150k small mail records at ~7 (~3%); a memtable with
 * more keys only gets more false positives, never a wrong answer. Bits are set before the node is linked
 * (release store), and a reader's snapshot covers only writes published after their insert returned,
 * so every version a get may return has its bits visible.
 *
 * Point slots: a get of a key the memtable does hold (a tenth of the bench's readrandom) still paid the
 * whole skiplist search (~4.5 us of cache misses with 20k 1 KiB entries). MEM_SLOTS node pointers,
 * direct-mapped by the key's hash: each insert points its slot at the node it links (the newest version
 * of that key: a key's sequence numbers only grow), so a get finds the key's newest version in two cache
 * lines (slot, node) and walks level 0 to the newest one at or below its snapshot. A slot a later key took
 * over answers "unknown" and the get searches the skiplist; with 20k keys in 32k slots ~74% of the held
 * keys keep theirs. The slot is written after the node is linked and before the insert returns, so (as
 * for the filter) a get whose snapshot covers a version sees that version's or a newer node there. */
#define MEM_FILTER_BYTES ((size_t)128 * 1024)
#define MEM_FILTER_LINES (MEM_FILTER_BYTES / 64)
#define MEM_FILTER_K 6
#define MEM_SLOTS ((size_t)32 * 1024)
#define MEM_POINT_BYTES (MEM_FILTER_BYTES + MEM_SLOTS * sizeof(node *))

static inline uint64_t mem_mix(uint64_t x) {
    /* murmur3's 64-bit finaliser */
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t mem_key_hash(const uint8_t *k, size_t n) {
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

/* The first word of hash h's line (8 words) in the filter. */
static inline size_t mem_filter_line(uint64_t h) {
    return (size_t)(((h >> 32) * (uint64_t)MEM_FILTER_LINES) >> 32) * 8;
}

/* Bit i (< MEM_FILTER_K) of hash h within its 512-bit line: 9 bits each from the low 32 bits of h,
 * spread over all 64. Set and tested one at a time, each a single word: building an 8-word mask first
 * cost ~25 ns of a ~185 ns batch insert per entry. */
static inline unsigned mem_filter_bit(uint64_t g, int i) {
    return (unsigned)(g >> (64 - 9 * (i + 1))) & 511u;
}

static inline node **mem_slots(uint64_t *f) { return (node **)(f + MEM_FILTER_BYTES / 8); }

/* The one writer adds each key (hash h) before linking its node. No filter (out of memory) only means no
 * skip. */
static void mem_filter_add(lsm_memtable *m, uint64_t h) {
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

/* The filter line and the slot an insert of hash h will write, fetched while it searches the skiplist
 * (each is a cache miss of its own otherwise: ~55 -> ~20 ns per insert). */
static inline void mem_point_prefetch(const lsm_memtable *m, uint64_t h) {
    uint64_t *f = m->filt;
    if (!f) return;
    __builtin_prefetch(&f[mem_filter_line(h)], 1);
    __builtin_prefetch(&mem_slots(f)[h & (MEM_SLOTS - 1)], 1);
}

/* After linking node n (hash h): its slot names it. */
static inline void mem_point_set(lsm_memtable *m, uint64_t h, node *n) {
    uint64_t *f = m->filt;
    if (f) __atomic_store_n(&mem_slots(f)[h & (MEM_SLOTS - 1)], n, __ATOMIC_RELEASE);
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

static inline uint64_t ld64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint64_t ld64be(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(ld64(p));
#else
    return ld64(p);
#endif
}

/* memcmp's sign for l bytes, inline: keys are short (the bench's are 16 bytes), and the call to libc's
 * memcmp was ~20% of a sorted batch insert's profile (its setup costs more than two word compares). */
static inline int bytes_cmp(const uint8_t *a, const uint8_t *b, size_t l) {
    for (; l >= 8; a += 8, b += 8, l -= 8) {
        uint64_t x = ld64be(a), y = ld64be(b);
        if (x != y) return x < y ? -1 : 1;
    }
    for (; l; a++, b++, l--)
        if (*a != *b) return *a < *b ? -1 : 1;
    return 0;
}

/* <0, 0, >0 as node n sorts before, equal to, or after (key, trailer). */
static inline int cmp_node(const node *n, const uint8_t *key, size_t klen, uint64_t trailer) {
    size_t l = n->klen < klen ? n->klen : klen;
    int c = bytes_cmp(key_of(n), key, l);
    if (c) return c;
    if (n->klen != klen) return n->klen < klen ? -1 : 1;
    if (n->trailer != trailer) return n->trailer > trailer ? -1 : 1;
    return 0;
}

/* First node >= (key, trailer), or NULL; fills prev[] with the last node < it on every level. */
static node *find_ge(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer, node **prev) {
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

static int random_height(lsm_memtable *m) {
    int h = 1;
    for (;;) {
        uint64_t x = m->rng; /* xorshift64 */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m->rng = x;
        /* Branching factor 4, as LevelDB: ~1.33 pointers per node. */
        if (h >= MAX_HEIGHT || (x & 3) != 0) return h;
        h++;
    }
}

static int insert(lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer, const uint8_t *val,
                  size_t vlen) {
    node *prev[MAX_HEIGHT];
    uint64_t kh = mem_key_hash(key, klen);
    mem_point_prefetch(m, kh);
    find_ge(m, key, klen, trailer, prev);
    int h = random_height(m);
    if (h > m->height) {
        for (int i = m->height; i < h; i++) prev[i] = m->head;
        /* Readers that see the new height before the node find head->next[i] NULL there: still correct. */
        __atomic_store_n(&m->height, h, __ATOMIC_RELAXED);
    }
    node *n = arena_alloc(m, sizeof(node) + (size_t)h * sizeof(node *) + klen + vlen);
    if (!n) return LSM_ESPACE;
    n->trailer = trailer;
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    n->height = (uint32_t)h;
    n->pad = 0;
    memcpy((uint8_t *)&n->next[h], key, klen);
    if (vlen) memcpy((uint8_t *)&n->next[h] + klen, val, vlen);
    mem_filter_add(m, kh);
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
static int parse_entry(const uint8_t *rep, size_t len, size_t *pos, uint8_t *kind, size_t *koff, uint64_t *klen,
                       size_t *voff, uint64_t *vlen) {
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
static int64_t add_each(lsm_memtable *m, const uint8_t *rep, size_t len, uint64_t seq, uint64_t count,
                        uint64_t *out) {
    uint8_t kind;
    size_t pos = 0, koff, voff;
    uint64_t klen, vlen, rd = 0, bytes = 0;
    for (uint64_t i = 0; i < count; i++)
        if (parse_entry(rep, len, &pos, &kind, &koff, &klen, &voff, &vlen)) return LSM_ECORRUPT;
    if (pos != len) return LSM_ECORRUPT;
    pos = 0;
    int64_t added = 0;
    for (uint64_t i = 0; i < count; i++, seq++) {
        parse_entry(rep, len, &pos, &kind, &koff, &klen, &voff, &vlen);
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

/* ---- Batch insert: sorted, searched many at once, linked in order.
 *
 * Why: an insert in random order is a skiplist search from the top, and in a memtable grown to 200k
 * entries (the bench's deleterandom: 200 batches of 1,000 random deletes) its lower levels are ~10
 * dependent cache misses, one after the other: ~370-450 ns per entry of lsm_mem_add_rep (thread CPU time,
 * in-process A/B of the old and new code, medians of 7), ~290-300 with each batch handed over pre-sorted.
 * What: the batch is parsed into a scratch array and sorted into internal order (a radix sort of the 6
 * key bytes after the prefix every key of the batch shares, ties settled by the full comparison: ~2% of
 * the time). Then
 *  1. search_old finds each entry's predecessor on every level it will be linked on, in the list as it
 *     was before the batch. The upper levels (each a 4^l-th of the list: at most FINE_NODES nodes, so
 *     they stay cached) are walked with one splice in sorted order: consecutive entries share them.
 *     Below, every step is a likely miss, so FINE_WAYS entries are searched at once, round robin, each
 *     prefetching the node it compares next: their misses overlap instead of queueing.
 *  2. The entries are linked in sorted order, each after its old predecessor on each level, or after the
 *     entry of this batch linked last on that level if that one had the same old predecessor.
 * Measured (same A/B): random batches 370-450 -> 140-150 ns per entry; pre-sorted 290-300 -> ~150; 1 KiB
 * puts in batches of 1,000 (30k entries) 475 -> 270, of 100: 490 -> 340. Steps on the way: sorting plus a
 * RocksDB-style splice (one search finger, every level) gave ~250; comparing keys inline instead of
 * calling libc memcmp ~225; interleaving 8 searches ~178, 16 ~170, 32 no better; setting the filter bits
 * one word at a time ~155; the key in the search state ~145. Prefetching the filter line and slot further
 * ahead, or the predecessors before linking, changed nothing measurable; nor did a branch-free search
 * step. Where the ~145 ns go (cycle counts): the search ~100 (its cached levels ~35, the interleaved
 * ones ~65: ~6 steps of ~10 ns, compute-bound now), sort and hashes ~20, linking ~19.
 * Semantics are insert()'s: the same nodes (entry i at seq + i), filter bits before a node's release-store
 * links, its point slot after; readers only ever see a sorted list. Only the one writer links nodes, so
 * the old list search_old walks does not change under it. */

/* Below 8 entries the sort and the interleaving cost more than they save (4: 516 -> 591 ns per entry,
 * 8: 471 -> 452, 16: 432 -> 333, 32: 417 -> 272): insert() per entry. */
#define SORTED_MIN 8
/* Entries sorted together: an entry's index is the low 16 bits of its sort word. */
#define SORT_MAX ((size_t)1 << 16)
/* Per entry: the parsed entry, two sort words, its predecessors (up to MAX_HEIGHT), their offset and its
 * height. Kept in the memtable between batches up to 2,048 entries' worth (~360 KiB, mostly never
 * touched: ~1.33 predecessors per entry); a bigger batch's arrays are freed after it. */
#define SCRATCH_PER (sizeof(bent) + 2 * sizeof(uint64_t) + MAX_HEIGHT * sizeof(node *) + sizeof(uint32_t) + 1)
#define SCRATCH_KEEP ((size_t)2048 * SCRATCH_PER)

/* One parsed entry of a batch. */
typedef struct bent {
    const uint8_t *key;
    const uint8_t *val;
    uint32_t klen, vlen;
    uint64_t trailer;
} bent;

/* Parse n entries at *pos (the first at sequence seq) into e[], skipping RANGE_DEL ones (counted in *rd).
 * Returns how many were kept, -1 if an entry is malformed. */
static int64_t parse_run(const uint8_t *rep, size_t len, size_t *pos, size_t n, uint64_t seq, bent *e,
                         uint64_t *rd) {
    uint8_t kind;
    size_t koff, voff, k = 0;
    uint64_t klen, vlen;
    for (size_t i = 0; i < n; i++, seq++) {
        if (parse_entry(rep, len, pos, &kind, &koff, &klen, &voff, &vlen)) return -1;
        if (kind == KIND_RANGE_DEL) {
            (*rd)++;
            continue;
        }
        e[k].key = rep + koff;
        e[k].val = rep + voff;
        e[k].klen = (uint32_t)klen;
        e[k].vlen = (uint32_t)vlen;
        e[k].trailer = seq << 8 | kind;
        k++;
    }
    return (int64_t)k;
}

/* How many leading bytes all n (>= 1) keys share. */
static size_t common_prefix(const bent *e, size_t n) {
    size_t cp = e[0].klen;
    const uint8_t *a = e[0].key;
    for (size_t i = 1; i < n && cp; i++) {
        const uint8_t *b = e[i].key;
        size_t l = 0, lim = cp < e[i].klen ? cp : e[i].klen;
        while (l + 8 <= lim && ld64(a + l) == ld64(b + l)) l += 8;
        while (l < lim && a[l] == b[l]) l++;
        cp = l;
    }
    return cp;
}

/* The sort word of an entry whose first cp bytes every key of the run shares: the next 6 key bytes, big
 * endian, zero-padded past the key's end, in the top 48 bits (the index goes in the low 16). Padding with
 * the smallest byte keeps the words' order consistent with the keys' (a key sorts before its extensions),
 * ties are settled by sort_ties. */
static inline uint64_t sort_word(const bent *x, size_t cp) {
    size_t avail = x->klen - cp;
    const uint8_t *k = x->key + cp;
    uint64_t p = 0;
    if (avail >= 8) {
        p = ld64be(k) >> 16;
    } else {
        for (size_t j = 0; j < 6; j++) p = p << 8 | (j < avail ? k[j] : 0);
    }
    return p << 16;
}

/* Internal order of two entries whose keys share their first cp bytes: < 0 when a sorts first. Two
 * entries of one batch never have the same trailer. */
static inline int bent_cmp(const bent *a, const bent *b, size_t cp) {
    size_t l = (a->klen < b->klen ? a->klen : b->klen) - cp;
    int c = bytes_cmp(a->key + cp, b->key + cp, l);
    if (c) return c;
    if (a->klen != b->klen) return a->klen < b->klen ? -1 : 1;
    return a->trailer > b->trailer ? -1 : 1;
}

/* LSD radix sort of the words' top 48 bits, one pass per byte that is not the same in every word; stable
 * (equal prefixes keep their index order). Returns a or b, whichever holds the result. */
static uint64_t *radix_sort(uint64_t *a, uint64_t *b, size_t n) {
    uint64_t all = ~(uint64_t)0, any = 0;
    for (size_t i = 0; i < n; i++) {
        all &= a[i];
        any |= a[i];
    }
    uint64_t vary = all ^ any;
    int shift[6], np = 0;
    for (int d = 0; d < 6; d++)
        if ((vary >> (16 + 8 * d)) & 0xFF) shift[np++] = 16 + 8 * d;
    if (!np) return a;
    uint32_t cnt[6][256];
    memset(cnt, 0, sizeof(cnt[0]) * (size_t)np);
    for (size_t i = 0; i < n; i++)
        for (int p = 0; p < np; p++) cnt[p][(a[i] >> shift[p]) & 0xFF]++;
    for (int p = 0; p < np; p++) {
        uint32_t sum = 0;
        for (int v = 0; v < 256; v++) {
            uint32_t c = cnt[p][v];
            cnt[p][v] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) b[cnt[p][(a[i] >> shift[p]) & 0xFF]++] = a[i];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    return a;
}

/* Merge sort of w[0:n) by bent_cmp (insertion sort below 12), tmp holding n words. */
static void sort_full(uint64_t *w, size_t n, const bent *e, size_t cp, uint64_t *tmp) {
    if (n <= 12) {
        for (size_t i = 1; i < n; i++) {
            uint64_t v = w[i];
            size_t j = i;
            while (j && bent_cmp(&e[v & 0xFFFF], &e[w[j - 1] & 0xFFFF], cp) < 0) {
                w[j] = w[j - 1];
                j--;
            }
            w[j] = v;
        }
        return;
    }
    size_t h = n / 2, i = 0, j = h, k = 0;
    sort_full(w, h, e, cp, tmp);
    sort_full(w + h, n - h, e, cp, tmp);
    while (i < h && j < n)
        tmp[k++] = bent_cmp(&e[w[j] & 0xFFFF], &e[w[i] & 0xFFFF], cp) < 0 ? w[j++] : w[i++];
    while (i < h) tmp[k++] = w[i++];
    while (j < n) tmp[k++] = w[j++];
    memcpy(w, tmp, n * sizeof(uint64_t));
}

/* Settle the runs of equal 48-bit prefixes (longer keys, versions of one key) by the full order. */
static void sort_ties(uint64_t *w, size_t n, const bent *e, size_t cp, uint64_t *tmp) {
    size_t i = 0;
    while (i < n) {
        size_t j = i + 1;
        while (j < n && (w[j] >> 16) == (w[i] >> 16)) j++;
        if (j - i > 1) sort_full(w + i, j - i, e, cp, tmp);
        i = j;
    }
}

/* The search finger: on every level, the last node before the entry it was moved to last and the node
 * after it (prev[l]->next[l]), in a list nothing is linked into meanwhile (search_old's). */
typedef struct splice {
    node *prev[MAX_HEIGHT];
    node *next[MAX_HEIGHT];
} splice;

/* Move the splice to entry x, which sorts after every key it was moved to before, on levels lo and up:
 * up from level lo to the lowest level whose (prev, next) bracket still holds x, then down from there as
 * find_ge does, each level starting from the node found one level up. prev[l] < x on every level, so only
 * the next side is tested; and a next[l] found to lie before x is itself a valid start on its level. */
static void splice_seek(splice *sp, int lo, const bent *x) {
    const uint8_t *key = x->key;
    size_t klen = x->klen;
    uint64_t tr = x->trailer;
    int top = lo;
    while (top < MAX_HEIGHT - 1 && sp->next[top] && cmp_node(sp->next[top], key, klen, tr) < 0) top++;
    node *bound = sp->next[top];
    if (top == MAX_HEIGHT - 1 && bound && cmp_node(bound, key, klen, tr) < 0) {
        /* Only on the top level: nothing above to bracket x. */
        node *y = bound;
        bound = load(&y->next[top]);
        while (bound && cmp_node(bound, key, klen, tr) < 0) {
            y = bound;
            bound = load(&y->next[top]);
        }
        sp->prev[top] = y;
        sp->next[top] = bound;
    }
    if (top == lo) return;
    node *y = sp->next[top - 1]; /* before x: the upward walk compared it */
    for (int l = top - 1; l >= lo; l--) {
        node *nx = load(&y->next[l]);
        while (nx != bound && cmp_node(nx, key, klen, tr) < 0) {
            y = nx;
            nx = load(&y->next[l]);
        }
        sp->prev[l] = y;
        sp->next[l] = nx;
        bound = nx;
    }
}

/* Fetch the cache lines node n's comparison reads: its lengths and height, and its key after the next
 * pointers (for heights 1-3 and short keys that is at most the next line). */
static inline void prefetch_node(const node *n) {
    __builtin_prefetch(n);
    __builtin_prefetch((const uint8_t *)n + 56);
}

/* One of the FINE_WAYS searches search_old keeps in flight. */
typedef struct fine {
    const uint8_t *key; /* the entry's, copied: one indirection less per step */
    size_t klen;
    uint64_t tr;
    node *y, *cand, *bound; /* y before the key on `level`; cand = y->next[level]; bound known after it */
    node **pv;              /* where to store y per level below h */
    int level, h;
} fine;

/* Searches search_old keeps in flight below the cached levels: 4 -> 192, 8 -> 179, 16 -> 170, 32 -> 165
 * ns per entry of the random deletes. */
#define FINE_WAYS 16
/* How far ahead of the entry being linked its filter line and point slot are fetched. */
#define POINT_AHEAD 8

/* Start the search of entry x (height h) in the list as it was before the batch: the splice (moved in
 * sorted order, so mostly within the cached upper levels) gives the last node before x on levels c and
 * up, stored in pv[c..h); below c, *q continues it. Returns 0 when nothing is left below (c == 0). */
static inline int fine_start(splice *sp, int c, const bent *x, int h, node **pv, fine *q) {
    splice_seek(sp, c, x);
    for (int l = c; l < h; l++) pv[l] = sp->prev[l];
    if (c == 0) return 0;
    q->key = x->key;
    q->klen = x->klen;
    q->tr = x->trailer;
    q->h = h;
    q->pv = pv;
    q->level = c - 1;
    q->y = sp->prev[c];
    q->bound = sp->next[c];
    q->cand = load(&q->y->next[c - 1]);
    prefetch_node(q->cand);
    return 1;
}

/* For every entry i (sorted order, height hs[i]): pv[off[i] + l] = the last node before it on level l
 * in the list as it was before the batch, for l < hs[i]. Levels c and up are walked with one splice
 * (their nodes, a 4^c-th of the list, stay cached); below c each step is a likely cache miss, so
 * FINE_WAYS searches go on at once, round robin, each prefetching the node it will compare next: their
 * misses overlap instead of each waiting for the last. */
static void search_old(lsm_memtable *m, const bent *e, const uint64_t *w, size_t n, const uint8_t *hs,
                       const uint32_t *off, node **pv, int c) {
    splice sp;
    for (int l = 0; l < MAX_HEIGHT; l++) {
        sp.prev[l] = m->head;
        sp.next[l] = load(&m->head->next[l]);
    }
    fine f[FINE_WAYS];
    int act = 0;
    size_t i = 0;
    while (act < FINE_WAYS && i < n) {
        act += fine_start(&sp, c, &e[w[i] & 0xFFFF], hs[i], pv + off[i], &f[act]);
        i++;
    }
    while (act) {
        for (int s = 0; s < act;) {
            fine *q = &f[s];
            node *cn = q->cand;
            if (cn != q->bound && cmp_node(cn, q->key, q->klen, q->tr) < 0) {
                q->y = cn;
                q->cand = load(&cn->next[q->level]);
                prefetch_node(q->cand);
                s++;
                continue;
            }
            if (q->level < q->h) q->pv[q->level] = q->y;
            if (q->level > 0) {
                q->level--;
                q->bound = cn;
                q->cand = load(&q->y->next[q->level]);
                prefetch_node(q->cand);
                s++;
                continue;
            }
            /* Done: the slot takes the next entry, or the last slot's search moves here. */
            int more = 0;
            while (!more && i < n) {
                more = fine_start(&sp, c, &e[w[i] & 0xFFFF], hs[i], pv + off[i], q);
                i++;
            }
            if (more) s++;
            else f[s] = f[--act];
        }
    }
}

/* Levels whose nodes search_old walks with its splice: c and up, c the lowest level with at most
 * FINE_NODES nodes (a 4^c-th of the list; 4,096 nodes of the bench's ~64 bytes fit the 1 MiB L2 beside the
 * rest). 1,024, 2,048 and 16,384 measured the same or up to 10% slower. */
#define FINE_NODES 4096

/* Sort the n entries e[] into internal order and insert them: search_old finds every entry's place in the
 * list as it was, then each is linked in sorted order after the last node before it on each level, which
 * is its place found in the old list, unless an entry of this batch inserted before it on that level went
 * into the same place (same old predecessor): then that entry's node. Linking is as insert() does it:
 * filter bits before the node is linked (release stores, lowest level first), its point slot after;
 * versions of one key come together, newest first, so only the first sets the key's bits and slot (the
 * slot must keep naming the newest version). Returns 0, or LSM_ESPACE if the arena cannot grow (the
 * entries before stay inserted, as with insert()). *bytes += the key and value bytes inserted. */
static int insert_sorted(lsm_memtable *m, const bent *e, size_t n, uint64_t *wa, uint64_t *wb, node **pv,
                         uint32_t *off, uint8_t *hs, uint64_t *bytes) {
    if (!n) return 0;
    size_t cp = common_prefix(e, n);
    for (size_t i = 0; i < n; i++) wa[i] = sort_word(&e[i], cp) | i;
    uint64_t *w = radix_sort(wa, wb, n);
    uint64_t *kh = w == wa ? wb : wa;
    sort_ties(w, n, e, cp, kh);
    uint32_t tot = 0;
    for (size_t i = 0; i < n; i++) {
        const bent *x = &e[w[i] & 0xFFFF];
        kh[i] = mem_key_hash(x->key, x->klen);
        hs[i] = (uint8_t)random_height(m);
        off[i] = tot;
        tot += hs[i];
    }
    int c = 0;
    while (c < MAX_HEIGHT - 1 && (m->count >> (2 * c)) > FINE_NODES) c++;
    search_old(m, e, w, n, hs, off, pv, c);

    node *lastold[MAX_HEIGHT], *lastnew[MAX_HEIGHT];
    for (int l = 0; l < MAX_HEIGHT; l++) lastold[l] = lastnew[l] = NULL;
    const bent *last = NULL;
    for (size_t i = 0; i < n && i < POINT_AHEAD; i++) mem_point_prefetch(m, kh[i]);
    for (size_t i = 0; i < n; i++) {
        const bent *x = &e[w[i] & 0xFFFF];
        /* The filter line and slot of an entry a few ahead are fetched while this one is linked. */
        if (i + POINT_AHEAD < n) mem_point_prefetch(m, kh[i + POINT_AHEAD]);
        int point = !last || (w[i] >> 16) != (w[i - 1] >> 16) || last->klen != x->klen ||
                    memcmp(last->key, x->key, x->klen) != 0;
        int h = hs[i];
        node **p = pv + off[i];
        /* Readers that see the new height before the node find head->next[l] NULL there: still correct. */
        if (h > m->height) __atomic_store_n(&m->height, h, __ATOMIC_RELAXED);
        node *nd = arena_alloc(m, sizeof(node) + (size_t)h * sizeof(node *) + x->klen + x->vlen);
        if (!nd) return LSM_ESPACE;
        nd->trailer = x->trailer;
        nd->klen = x->klen;
        nd->vlen = x->vlen;
        nd->height = (uint32_t)h;
        nd->pad = 0;
        memcpy((uint8_t *)&nd->next[h], x->key, x->klen);
        if (x->vlen) memcpy((uint8_t *)&nd->next[h] + x->klen, x->val, x->vlen);
        if (point) mem_filter_add(m, kh[i]);
        for (int l = 0; l < h; l++) {
            node *r = lastold[l] == p[l] ? lastnew[l] : p[l];
            nd->next[l] = __atomic_load_n(&r->next[l], __ATOMIC_RELAXED);
            __atomic_store_n(&r->next[l], nd, __ATOMIC_RELEASE);
            lastold[l] = p[l];
            lastnew[l] = nd;
        }
        if (point) mem_point_set(m, kh[i], nd);
        m->count++;
        if (x->vlen > m->max_vlen) m->max_vlen = x->vlen;
        *bytes += (uint64_t)x->klen + x->vlen;
        last = x;
    }
    return 0;
}

int64_t lsm_mem_add_rep(lsm_memtable *m, const uint8_t *rep, size_t len, uint64_t seq, uint64_t count,
                        uint64_t *out) {
    /* Insert `count` entries encoded in rep[0:len), the i-th at sequence seq + i. Returns how many were
     * inserted; out[0] = the number of RANGE_DEL entries (not inserted), out[1] = the key and value
     * bytes of the inserted ones. Batches of SORTED_MIN entries or more are inserted in internal order
     * (insert_sorted); the nodes, and what any reader can see once the call returns, are the same. */
    if (count && (seq > ((uint64_t)1 << 56) - count)) return LSM_EINVAL;
    if (count < SORTED_MIN) return add_each(m, rep, len, seq, count, out);
    size_t run = count < SORT_MAX ? (size_t)count : SORT_MAX;
    size_t need = run * SCRATCH_PER;
    if (m->scratch_cap < need) {
        free(m->scratch);
        m->scratch = malloc(need);
        m->scratch_cap = m->scratch ? need : 0;
        if (!m->scratch) return add_each(m, rep, len, seq, count, out);
    }
    bent *e = m->scratch;
    uint64_t *wa = (uint64_t *)(e + run), *wb = wa + run;
    node **pv = (node **)(wb + run);
    uint32_t *off = (uint32_t *)(pv + run * MAX_HEIGHT);
    uint8_t *hs = (uint8_t *)(off + run);
    uint64_t rd = 0, bytes = 0;
    size_t pos = 0;
    int rc = 0;
    if (count <= SORT_MAX) {
        int64_t k = parse_run(rep, len, &pos, run, seq, e, &rd);
        if (k < 0 || pos != len) return LSM_ECORRUPT;
        rc = insert_sorted(m, e, (size_t)k, wa, wb, pv, off, hs, &bytes);
    } else {
        /* Check the whole batch first, then sort and insert it SORT_MAX entries at a time (in sequence
         * order, so the last run holding a key sets its slot to the newest version). */
        uint8_t kind;
        size_t koff, voff;
        uint64_t klen, vlen;
        for (uint64_t i = 0; i < count; i++)
            if (parse_entry(rep, len, &pos, &kind, &koff, &klen, &voff, &vlen)) return LSM_ECORRUPT;
        if (pos != len) return LSM_ECORRUPT;
        pos = 0;
        for (uint64_t i = 0; i < count && !rc; i += run) {
            size_t r = count - i < run ? (size_t)(count - i) : run;
            int64_t k = parse_run(rep, len, &pos, r, seq + i, e, &rd);
            rc = insert_sorted(m, e, (size_t)k, wa, wb, pv, off, hs, &bytes);
        }
    }
    if (m->scratch_cap > SCRATCH_KEEP) {
        free(m->scratch);
        m->scratch = NULL;
        m->scratch_cap = 0;
    }
    if (rc) return rc;
    out[0] = rd;
    out[1] = bytes;
    return (int64_t)(count - rd);
}

int lsm_mem_get(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t snapshot_seq, uint64_t *out,
                const uint8_t **value) {
    /* The newest version of key with seq <= snapshot_seq: returns 1 and out[0] = trailer, out[1] = value
     * length, *value = its bytes (valid while the memtable lives); 0 if there is none. */
    const uint64_t *f = __atomic_load_n(&m->filt, __ATOMIC_ACQUIRE);
    uint64_t h = f ? mem_key_hash(key, klen) : 0;
    if (!mem_filter_may(f, h)) return 0;
    if (snapshot_seq >= ((uint64_t)1 << 56)) snapshot_seq = ((uint64_t)1 << 56) - 1;
    uint64_t want = snapshot_seq << 8 | 0xFF;
    const node *n = NULL;
    int r = mem_point_get(f, h, key, klen, want, &n);
    if (r == 0) return 0;
    if (r < 0) {
        n = find_ge(m, key, klen, want, NULL);
        if (!n || n->klen != klen || memcmp(key_of(n), key, klen) != 0) return 0;
    }
    out[0] = n->trailer;
    out[1] = n->vlen;
    *value = val_of(n);
    return 1;
}

static int64_t emit(const node *x, size_t n, uint8_t *buf, size_t cap, size_t *pos, uint64_t *ends,
                    uint64_t *trailers, uint64_t *need) {
    size_t sz = (size_t)x->klen + x->vlen;
    if (cap - *pos < sz) {
        if (n == 0) *need = sz;
        return -1;
    }
    memcpy(buf + *pos, key_of(x), sz);
    ends[2 * n] = *pos + x->klen;
    *pos += sz;
    ends[2 * n + 1] = *pos;
    trailers[n] = x->trailer;
    return 0;
}

static inline int key_lt(const node *x, const uint8_t *key, size_t klen) {
    size_t l = x->klen < klen ? x->klen : klen;
    int c = l ? memcmp(key_of(x), key, l) : 0;
    return c < 0 || (c == 0 && x->klen < klen);
}

/* Last node < (key, trailer), or the last node of all when key is NULL; the head if none. Fills prev[]
 * with the last node < the target on levels 0..height-1 (prev[0] is the result). */
static const node *seek_back(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer,
                             const node **prev, int *height) {
    node *x = m->head;
    int level = __atomic_load_n(&m->height, __ATOMIC_RELAXED) - 1;
    *height = level + 1;
    for (;;) {
        node *nx = load(&x->next[level]);
        if (nx && (!key || cmp_node(nx, key, klen, trailer) < 0)) {
            x = nx;
        } else {
            prev[level] = x;
            if (level == 0) return x;
            level--;
        }
    }
}

/* Versions one reverse scan call returns at most: the run collected by a forward walk is kept in a ring
 * of this many node pointers on the stack (2 KiB); the Python side asks for at most 256 per call. */
#define BACK_MAX 256

/* The run scan_back and lsm_mem_cursor_back emit: from the node on the lowest level of prev[] expected to
 * lie at least `need` versions before hi, walk level 0 forward to hi, keeping the last `cap` nodes in
 * ring (index i % cap). Returns how many nodes were walked (the newest min(count, cap) are in ring); *from
 * = the level's node the walk started at (the head when it started at the first node). */
static size_t back_run(const lsm_memtable *m, const node *const *prev, int height, const node *hi,
                       size_t need, const node **ring, size_t cap, const node **from) {
    size_t reach = 1;
    int lv = 0;
    while (lv + 1 < height && (reach < need || prev[lv] == hi)) {
        lv++;
        reach *= 4;
    }
    const node *lo = prev[lv];
    const node *y = lo == m->head ? load(&lo->next[0]) : lo;
    size_t cnt = 0;
    *from = lo;
    for (;;) {
        ring[cnt++ % cap] = y;
        if (y == hi) break;
        y = load(&y->next[0]);
    }
    return cnt;
}

/* The reverse half of lsm_mem_scan without a skiplist search per version: one search for the last node
 * below the target also yields, on level L, a node expected 4^L versions further back; walking level 0
 * forward from it to the found node collects that run, which is emitted back to front. The next search
 * starts below the run's first node. Nodes linked in by a writer meanwhile are either inside a walked
 * run (in order, as the forward scan sees them) or found by a later search, so the output stays in
 * strictly descending internal order, as the per-version search gave it. */
static int64_t scan_back(const lsm_memtable *m, const void *after, const uint8_t *start, size_t slen,
                         const uint8_t *end, size_t elen, size_t max_n, uint8_t *buf, size_t cap,
                         uint64_t *ends, uint64_t *trailers, const void **last, uint64_t *state) {
    const node *prev[MAX_HEIGHT];
    const node *ring[BACK_MAX];
    size_t n = 0, pos = 0, want = max_n < BACK_MAX ? max_n : BACK_MAX;
    int height;
    const node *hi;
    if (after) {
        const node *a = after;
        hi = seek_back(m, key_of(a), a->klen, a->trailer, prev, &height);
    } else {
        hi = seek_back(m, end, elen, UINT64_MAX, prev, &height);
    }
    while (n < want) {
        if (hi == m->head) goto exhausted;
        /* The lowest level whose predecessor is expected to lie at least the remaining count back. */
        const node *lo;
        size_t cnt = back_run(m, prev, height, hi, want - n, ring, BACK_MAX, &lo);
        size_t k = cnt < BACK_MAX ? cnt : BACK_MAX;
        for (size_t i = 0; i < k && n < want; i++) {
            const node *x = ring[(cnt - 1 - i) % BACK_MAX];
            if (start && key_lt(x, start, slen)) goto exhausted;
            if (emit(x, n, buf, cap, &pos, ends, trailers, &state[1])) return (int64_t)n;
            *last = x;
            n++;
        }
        if (n == want) break;
        /* The whole run from lo is out: continue below lo (or stop at the head). */
        if (lo == m->head) goto exhausted;
        hi = seek_back(m, key_of(lo), lo->klen, lo->trailer, prev, &height);
    }
    return (int64_t)n;
exhausted:
    state[0] = 1;
    return (int64_t)n;
}

int64_t lsm_mem_scan(const lsm_memtable *m, int reverse, const void *after, const uint8_t *start, size_t slen,
                     const uint8_t *end, size_t elen, size_t max_n, uint8_t *buf, size_t cap, uint64_t *ends,
                     uint64_t *trailers, const void **last, uint64_t *state) {
    /* Copy up to max_n versions with start <= key < end (NULL = unbounded) into buf: entry i's key is
     * buf[ends[2i-1]:ends[2i]] (from 0 for i = 0), its value buf[ends[2i]:ends[2i+1]], its trailer
     * trailers[i]. Forward = internal order, reverse = its exact reverse (at most BACK_MAX versions per
     * call). `after` = the *last of the previous chunk (NULL to begin). state[0] = 1 once the range is
     * exhausted; state[1] = bytes needed when not even the first version fits in cap (then 0 is returned:
     * grow buf and call again). */
    size_t n = 0, pos = 0;
    const node *x;
    state[0] = 0;
    state[1] = 0;
    if (reverse)
        return scan_back(m, after, start, slen, end, elen, max_n, buf, cap, ends, trailers, last, state);
    if (after) x = load(&((const node *)after)->next[0]);
    else if (start) x = find_ge(m, start, slen, UINT64_MAX, NULL);
    else x = load(&m->head->next[0]);
    for (; x && n < max_n; x = load(&x->next[0])) {
        if (end && !key_lt(x, end, elen)) break;
        if (emit(x, n, buf, cap, &pos, ends, trailers, &state[1])) return (int64_t)n;
        *last = x;
        n++;
    }
    if (n < max_n) state[0] = 1;
    return (int64_t)n;
}

int64_t lsm_mem_flush_scan(const lsm_memtable *m, const void *after, size_t max_n, uint8_t *buf, size_t cap,
                           uint64_t *ends, const void **last, uint64_t *state) {
    /* For a flush with no snapshot and no range tombstone: the newest version of every key, in order,
     * as internal keys (user key + 8-byte little-endian trailer) and values laid out in buf as in
     * lsm_mem_scan (ends[2i] = internal key end, ends[2i+1] = value end). `after`, *last and state[]
     * as in lsm_mem_scan. Older versions of a key are skipped: no reader can see them. */
    size_t n = 0, pos = 0;
    const node *prev = after;
    const node *x = after ? load(&prev->next[0]) : load(&m->head->next[0]);
    state[0] = 0;
    state[1] = 0;
    for (; x && n < max_n; x = load(&x->next[0])) {
        if (prev && prev->klen == x->klen && memcmp(key_of(prev), key_of(x), x->klen) == 0) continue;
        size_t sz = (size_t)x->klen + 8 + x->vlen;
        if (cap - pos < sz) {
            if (n == 0) state[1] = sz;
            return (int64_t)n;
        }
        memcpy(buf + pos, key_of(x), x->klen);
        pos += x->klen;
        for (int i = 0; i < 8; i++) buf[pos + i] = (uint8_t)(x->trailer >> (8 * i));
        pos += 8;
        ends[2 * n] = pos;
        memcpy(buf + pos, val_of(x), x->vlen);
        pos += x->vlen;
        ends[2 * n + 1] = pos;
        *last = x;
        prev = x;
        n++;
    }
    if (n < max_n) state[0] = 1;
    return (int64_t)n;
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

int64_t lsm_mem_flush_blocks(const lsm_memtable *m, const void *after, size_t block_size, uint32_t ri,
                             size_t max_blocks, uint8_t *buf, size_t cap, uint64_t *block_end,
                             uint64_t *block_last, uint8_t *keys, size_t keycap, uint64_t *key_end,
                             uint64_t *trailers, size_t max_keys, const void **last, uint64_t *state) {
    /* The data blocks of a flush (each key's newest version, as lsm_mem_flush_scan picks them), encoded
     * exactly as TableBuilder cuts and lsm_block_encode writes them: a block ends right after the entry
     * that brings its raw size (entries + restart array + count) to block_size or more. Block b is
     * buf[block_end[b-1]:block_end[b]]; entry i of this call has user key keys[key_end[i-1]:key_end[i]]
     * and trailer trailers[i]; block_last[b] = index of block b's last entry. Only whole blocks are
     * returned, except the last one of the memtable. Returns the block count; state[0] = 1 when the
     * memtable is exhausted, state[1] = 1 when not even one block fit (grow buf/keys and call again),
     * state[2] = entries returned, state[3] = their value bytes. */
    if (ri == 0 || block_size == 0) return LSM_EINVAL;
    state[0] = state[1] = state[2] = state[3] = 0;
    uint64_t vbytes = 0, vdone = 0;
    const node *prev = after;
    const node *x = after ? load(&prev->next[0]) : load(&m->head->next[0]);
    size_t nb = 0, pos = 0, kpos = 0, ne = 0;
    /* The open block: where it starts in buf/keys/entries, its entry count, its restart offsets. */
    size_t bstart = 0, estart = 0, bn = 0;
    uint32_t *restarts = NULL;
    size_t rcap = 0;
    const node *blast = NULL, *bprev = NULL;
    int64_t rc = 0;
    while (nb < max_blocks) {
        /* Skip older versions of the key just taken. */
        while (x && prev && prev->klen == x->klen && memcmp(key_of(prev), key_of(x), x->klen) == 0)
            x = load(&x->next[0]);
        if (!x) break;
        size_t klen = (size_t)x->klen + 8, vlen = x->vlen, shared = 0;
        if (bn % ri) {
            size_t pl = (size_t)bprev->klen + 8, mlen = klen < pl ? klen : pl;
            const uint8_t *a = key_of(bprev), *b = key_of(x);
            size_t ua = bprev->klen, ub = x->klen;
            /* Shared prefix of the internal keys (user key, then the 8 trailer bytes). */
            while (shared < mlen) {
                uint8_t ca = shared < ua ? a[shared] : (uint8_t)(bprev->trailer >> (8 * (shared - ua)));
                uint8_t cb = shared < ub ? b[shared] : (uint8_t)(x->trailer >> (8 * (shared - ub)));
                if (ca != cb) break;
                shared++;
            }
        }
        size_t nonsh = klen - shared;
        size_t need = varint_len(shared) + varint_len(nonsh) + varint_len(vlen) + nonsh + vlen;
        if (bn % ri == 0) {
            if (bn / ri >= rcap) {
                size_t nc = rcap ? 2 * rcap : 64;
                uint32_t *r = realloc(restarts, nc * sizeof(uint32_t));
                if (!r) {
                    rc = LSM_ESPACE;
                    goto out;
                }
                restarts = r;
                rcap = nc;
            }
            restarts[bn / ri] = (uint32_t)(pos - bstart);
        }
        size_t nr = bn / ri + 1;
        if (cap - pos < need + 4 * (nr + 1) || keycap - kpos < x->klen || ne >= max_keys) {
            /* Out of room: drop the open block; it is redone by the next call. */
            if (nb == 0) state[1] = 1;
            goto out;
        }
        uint8_t *p = buf + pos;
        p += lsm_put_varint(p, shared);
        p += lsm_put_varint(p, nonsh);
        p += lsm_put_varint(p, vlen);
        for (size_t i = shared; i < klen; i++)
            *p++ = i < x->klen ? key_of(x)[i] : (uint8_t)(x->trailer >> (8 * (i - x->klen)));
        memcpy(p, val_of(x), vlen);
        p += vlen;
        vbytes += vlen;
        pos = (size_t)(p - buf);
        memcpy(keys + kpos, key_of(x), x->klen);
        kpos += x->klen;
        key_end[ne] = kpos;
        trailers[ne] = x->trailer;
        ne++;
        bn++;
        bprev = x;
        prev = x;
        x = load(&x->next[0]);
        size_t raw = pos - bstart + 4 * nr + 4;
        int more = 0;
        if (raw < block_size) {
            /* The block stays open unless the memtable ends here. */
            const node *y = x;
            while (y && y->klen == bprev->klen && memcmp(key_of(y), key_of(bprev), y->klen) == 0)
                y = load(&y->next[0]);
            more = y != NULL;
        }
        if (!more) {
            /* Close the block: restart array and count. */
            for (size_t i = 0; i < nr; i++) {
                uint32_t r = restarts[i];
                for (int j = 0; j < 4; j++) buf[pos++] = (uint8_t)(r >> (8 * j));
            }
            for (int j = 0; j < 4; j++) buf[pos++] = (uint8_t)(nr >> (8 * j));
            block_end[nb] = pos;
            block_last[nb] = ne - 1;
            nb++;
            blast = bprev;
            bstart = pos;
            estart = ne;
            vdone = vbytes;
            bn = 0;
        }
    }
    if (bn == 0 && !x) state[0] = 1;
out:
    free(restarts);
    if (rc) return rc;
    /* Entries of a dropped open block are not returned. */
    state[2] = estart;
    state[3] = vdone;
    if (blast) *last = blast;
    return (int64_t)nb;
}

/* ---- Read-only cursor access for the C scan (native/scan.c); added after the functions above. ---- */

const void *lsm_mem_cursor_ge(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer) {
    /* The first node >= (key, trailer) in internal order (the first node when key is NULL), or NULL. */
    if (!key) return load(&m->head->next[0]);
    return find_ge(m, key, klen, trailer, NULL);
}

const void *lsm_mem_cursor_lt(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer) {
    /* The last node < (key, trailer) in internal order (the last node when key is NULL), or NULL. */
    const node *prev[MAX_HEIGHT];
    int height;
    const node *x = seek_back(m, key, klen, trailer, prev, &height);
    return x == m->head ? NULL : x;
}

const void *lsm_mem_cursor_next(const void *n) {
    /* The node after n, or NULL. */
    return load(&((const node *)n)->next[0]);
}

void lsm_mem_cursor_read(const void *n, const uint8_t **key, size_t *klen, uint64_t *trailer,
                         const uint8_t **value, size_t *vlen) {
    /* Node n's user key, trailer and value (valid while the memtable lives: nodes never move). */
    const node *x = n;
    *key = key_of(x);
    *klen = x->klen;
    *trailer = x->trailer;
    *value = val_of(x);
    *vlen = x->vlen;
}

size_t lsm_mem_cursor_back(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer,
                           const void **out, size_t max) {
    /* Up to max (at most BACK_MAX) nodes < (key, trailer) (the last nodes when key is NULL), nearest
     * first, into out; returns how many. One skiplist search plus a walk on level 0, as scan_back does,
     * instead of a search per node (a reverse step cost ~0.8 us in a 20k-node memtable). Nodes linked in
     * meanwhile may be missed: they are newer than any snapshot a scan reading them holds. */
    const node *prev[MAX_HEIGHT];
    const node *ring[BACK_MAX];
    int height;
    if (max > BACK_MAX) max = BACK_MAX;
    if (max == 0) return 0;
    const node *hi = seek_back(m, key, klen, trailer, prev, &height);
    if (hi == m->head) return 0;
    const node *lo;
    size_t cnt = back_run(m, prev, height, hi, max, ring, max, &lo);
    size_t k = cnt < max ? cnt : max;
    for (size_t i = 0; i < k; i++) out[i] = ring[(cnt - 1 - i) % max];
    return k;
}
