/* commit.c: the group-commit queue and the leader's WAL write + memtable insert (the pure twin is in
 * lsmmail/engine/write_path.py). Statuses: 0 ok; > 0 from lsm_cq_join: this caller leads a group of that
 * many writers; < 0: an error (-errno for I/O, or an LSM_E* code). lsm_cq_join's wait_for: a synced head
 * waits up to wait_ns for that many queued writers; < 0: for as many as the last lsm_cq_finish saw (its
 * group plus the writers still queued then); 0: no wait. */
#ifndef LSM_COMMIT_H
#define LSM_COMMIT_H
#include <stddef.h>
#include <stdint.h>

/* lsm_cq_join_kv's refusal before queueing (below every status a finished group can carry). */
#define LSM_CQ_NOT_QUEUED (-(INT64_C(1) << 62))

typedef struct lsm_cq lsm_cq;
typedef struct lsm_cqw lsm_cqw;

lsm_cq *lsm_cq_new(void);
void lsm_cq_free(lsm_cq *q);
lsm_cqw *lsm_cqw_new(void);
void lsm_cqw_free(lsm_cqw *w);
void lsm_cq_push(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count, uint64_t size, int sync,
                 int alone);
int64_t lsm_cq_group(lsm_cq *q, uint64_t max_bytes, uint64_t *addrs, size_t max_n, int *need_sync,
                     int64_t wait_for, int64_t wait_ns);
int64_t lsm_cq_join(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count, uint64_t size,
                    int sync, int alone, uint64_t max_bytes, uint64_t *addrs, size_t max_n, int *need_sync,
                    int64_t wait_for, int64_t wait_ns);
int64_t lsm_cq_commit(lsm_cq *q, int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync,
                      void *mem, uint64_t first_seq, size_t n, uint64_t *out);
int64_t lsm_wal_commit_one(int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync, void *mem,
                           const uint8_t *rep, size_t rep_len, uint64_t seq, uint64_t count, uint64_t *out);
void lsm_cq_set_hash(void *xxh3_64bits);
int lsm_cq_can_frame(void);
int64_t lsm_cq_frame_bound(size_t rep_bytes, size_t nrec);
int64_t lsm_cq_commit_framed(lsm_cq *q, int fd, uint64_t offset, uint64_t block_offset, int do_sync, void *mem,
                             uint64_t first_seq, size_t n, const uint8_t *rep, size_t rep_len, uint64_t count,
                             uint64_t *out);
int64_t lsm_cq_commit_kv(lsm_cq *q, int fd, uint64_t offset, uint64_t block_offset, int do_sync, void *mem,
                         uint64_t seq, int kind, const uint8_t *key, size_t klen, const uint8_t *value,
                         size_t vlen, uint64_t *out);
int64_t lsm_cq_finish(lsm_cq *q, size_t n, int64_t status);
int64_t lsm_cq_len(lsm_cq *q);
int lsm_cqw_reserve(lsm_cqw *w, size_t cap);
int64_t lsm_cq_join_kv(lsm_cq *q, lsm_cqw *w, int kind, const uint8_t *key, size_t klen,
                       const uint8_t *value, size_t vlen, int sync, uint64_t max_bytes, uint64_t *addrs,
                       size_t max_n, int *need_sync, int64_t wait_for, int64_t wait_ns);
void lsm_cq_counters(lsm_cq *q, uint64_t *out);
void lsm_cq_set_yield(lsm_cq *q, int64_t ns);
void lsm_cq_group_totals(lsm_cq *q, size_t n, uint64_t *out);
int64_t lsm_write_zero_pages(int fd, uint64_t start, uint64_t end);
int64_t lsm_cq_abandon(lsm_cq *q, lsm_cqw *w);
lsm_cqw *lsm_cqw_new_for(lsm_cq *q);
void lsm_cq_drop_writer(lsm_cq *q, lsm_cqw *w);

#endif
