/* The group-commit leader's I/O (docs/architecture.md "Write path"): frame a group's records (XXH3),
 * pwrite them, start the device's writeback, insert the batches into the C memtable while it writes,
 * then fdatasync. The queue that hands a leader its group is native/commit.c. */
#include "commit_internal.inc"
/* pwrite buf at offset (continuing short writes), then fdatasync if asked; 0 or -errno (out[2] = bytes
 * written, out[3] = 1 for the write, 2 for the sync). */
static int64_t write_sync(int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync, uint64_t *out) {
    size_t done = 0;
    while (done < len) {
        ssize_t k = pwrite(fd, buf + done, len - done, (off_t)(offset + done));
        if (k < 0) {
            if (errno == EINTR) continue;
            out[2] = done;
            out[3] = 1;
            return -(int64_t)errno;
        }
        done += (size_t)k;
    }
    out[2] = done;
    if (do_sync && fdatasync(fd) != 0) {
        out[3] = 2;
        return -(int64_t)errno;
    }
    return 0;
}

/* XXH3-64 (seed 0), the log's checksum (docs/format.md "Conventions"): the xxhash package's own
 * XXH3_64bits, handed over once by Python (lsm_cq_set_hash); NULL leaves framing to Python. */
typedef uint64_t (*xxh3_fn)(const void *data, size_t len);
static xxh3_fn g_xxh3;

void lsm_cq_set_hash(void *xxh3_64bits) { g_xxh3 = (xxh3_fn)xxh3_64bits; }

int lsm_cq_can_frame(void) { return g_xxh3 != NULL; }

#define LOG_BLOCK 32768
#define LOG_HEADER 7

/* Append one log record (payload = u64 seq, u32 count, rep) to out at out_pos, cut into fragments as
 * docs/format.md "Log format" says (and wal.py's LogWriter.encode_record does): no fragment crosses a
 * 32 KiB block; a block tail shorter than a header is zero-filled. *boff is the offset in the current
 * block. out must have room for frame_bound(rep_len) bytes. Returns the new out_pos. */
static size_t frame_record(uint8_t *out, size_t pos, uint64_t *boff, uint64_t seq, uint64_t count,
                           const uint8_t *rep, size_t rep_len) {
    uint8_t hdr[BATCH_HEADER];
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(seq >> (8 * i));
    for (int i = 0; i < 4; i++) hdr[8 + i] = (uint8_t)(count >> (8 * i));
    size_t total = BATCH_HEADER + rep_len, done = 0;
    int begin = 1;
    do {
        size_t room = LOG_BLOCK - (size_t)*boff;
        if (room < LOG_HEADER) {
            memset(out + pos, 0, room);
            pos += room;
            *boff = 0;
            room = LOG_BLOCK;
        }
        size_t left = total - done, frag = left < room - LOG_HEADER ? left : room - LOG_HEADER;
        int end = frag == left;
        uint8_t type = begin && end ? 1 : begin ? 2 : end ? 4 : 3;
        uint8_t *h = out + pos;
        h[4] = (uint8_t)frag;
        h[5] = (uint8_t)(frag >> 8);
        h[6] = type;
        /* The payload piece [done, done + frag) of hdr || rep. */
        size_t p = done, o = pos + LOG_HEADER;
        if (p < BATCH_HEADER) {
            size_t k = BATCH_HEADER - p < frag ? BATCH_HEADER - p : frag;
            memcpy(out + o, hdr + p, k);
            o += k;
            p += k;
        }
        if (done + frag > p) memcpy(out + o, rep + (p - BATCH_HEADER), done + frag - p);
        uint32_t cks = (uint32_t)g_xxh3(h + 6, 1 + frag);
        h[0] = (uint8_t)cks;
        h[1] = (uint8_t)(cks >> 8);
        h[2] = (uint8_t)(cks >> 16);
        h[3] = (uint8_t)(cks >> 24);
        pos += LOG_HEADER + frag;
        *boff += LOG_HEADER + frag;
        done += frag;
        begin = 0;
    } while (done < total);
    return pos;
}

/* Bytes frame_record may produce for a rep of rep_len: the payload plus, per block it touches, a header
 * and at most 6 bytes of padding. */
static size_t frame_bound(size_t rep_len) {
    size_t total = BATCH_HEADER + rep_len;
    return total + (total / (LOG_BLOCK - LOG_HEADER - 6) + 2) * (LOG_HEADER + 6);
}

/* Start writing [offset, offset + len) of fd back to the device, without waiting: only a head start for
 * the fdatasync that follows, which waits for it and reports any error of it (an error here is ignored
 * for that reason). Measured on this project's VM (a C loop, pwrite, CPU work, fdatasync; 800-1,000 of
 * each way, interleaved, 5 runs): an 8.4 KB write with 8.5 us of work 87-132 -> 78-120 us p50 (9-13 us
 * less: the work hidden); a 1.1 KB write with 1 us of work unchanged (within 1.6 us). The call itself
 * takes ~14 us, but the fdatasync then has that much less to do. */
static void start_writeback(int fd, uint64_t offset, size_t len) {
#ifdef SYNC_FILE_RANGE_WRITE
    (void)sync_file_range(fd, (off_t)offset, (off_t)len, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd;
    (void)offset;
    (void)len;
#endif
}

static int grow(lsm_cq *q, size_t need) {
    if (need <= q->cap) return 0;
    size_t cap = q->cap ? q->cap : 65536;
    while (cap < need) cap *= 2;
    uint8_t *b = realloc(q->buf, cap);
    if (!b) return -1;
    q->buf = b;
    q->cap = cap;
    return 0;
}

int64_t lsm_cq_frame_bound(size_t rep_bytes, size_t nrec) {
    /* An upper bound of the framed size of nrec records whose reps total rep_bytes (for preallocation). */
    return (int64_t)(frame_bound(rep_bytes) + nrec * (BATCH_HEADER + 2 * (LOG_HEADER + 6)));
}

/* Insert one batch (rep, len: its encoded entries; count entries from seq) into the C memtable and
 * add what lsm_mem_add_rep reports to out[0] (range deletions) and out[1] (key and value bytes); a
 * failure sets out[3] = 3 (the memtable step) and is returned. */
static int64_t insert_batch(void *mem, const uint8_t *rep, size_t len, uint64_t seq, uint64_t count,
                            uint64_t *out) {
    uint64_t tmp[2];
    int64_t r = lsm_mem_add_rep((lsm_memtable *)mem, rep, len, seq, count, tmp);
    if (r < 0) {
        out[3] = 3;
        return r;
    }
    out[0] += tmp[0];
    out[1] += tmp[1];
    return 0;
}

/* insert_batch of each of the n writers from w on, at consecutive sequence numbers from seq. The group
 * cannot leave the queue before lsm_cq_finish, and its links were set under q->mu before lsm_cq_join
 * handed it over, so they are read without the lock; the last member's `next` (which a push may be
 * setting now) is never read. */
static int64_t insert_group(void *mem, lsm_cqw *w, size_t n, uint64_t seq, uint64_t *out) {
    for (size_t i = 0; i < n && w; i++, w = i < n ? w->next : NULL) {
        int64_t r = insert_batch(mem, w->rep, w->len, seq, w->count, out);
        if (r < 0) return r;
        seq += w->count;
    }
    return 0;
}

int64_t lsm_cq_commit_framed(lsm_cq *q, int fd, uint64_t offset, uint64_t block_offset, int do_sync, void *mem,
                             uint64_t first_seq, size_t n, const uint8_t *rep, size_t rep_len, uint64_t count,
                             uint64_t *out) {
    /* lsm_cq_commit (n > 0: the first n queued writers) or lsm_wal_commit_one (n == 0: the batch rep
     * with count entries), framing the records here with their checksums instead of taking them framed.
     * The caller holds the commit section (q->buf is its scratch). out[] as lsm_cq_commit; out[4] =
     * the framed length (= out[2] on success). LSM_ESPACE if the buffer cannot grow, LSM_EINVAL without
     * a hash function. Unlike lsm_cq_commit, with do_sync the batches are inserted between the write and
     * the fdatasync, overlapping the device's write (~8 us for a group of 8 one-KiB puts): a failed
     * fdatasync (out[3] = 2) leaves them in the memtable under sequence numbers the caller never
     * publishes (it poisons the DB), as a memtable error leaves the batches before the bad one. */
    out[0] = out[1] = out[2] = out[3] = out[4] = 0;
    if (!g_xxh3) return LSM_EINVAL;
    lsm_cqw *w = NULL;
    size_t need = 0;
    if (n > 0) {
        pthread_mutex_lock(&q->mu);
        w = q->head;
        pthread_mutex_unlock(&q->mu);
        lsm_cqw *x = w;
        for (size_t i = 0; i < n && x; i++, x = i < n ? x->next : NULL) need += frame_bound(x->len);
    } else {
        need = frame_bound(rep_len);
    }
    if (grow(q, need)) return LSM_ESPACE;
    size_t pos = 0;
    uint64_t boff = block_offset % LOG_BLOCK, seq = first_seq;
    if (n > 0) {
        lsm_cqw *x = w;
        for (size_t i = 0; i < n && x; i++, x = i < n ? x->next : NULL) {
            pos = frame_record(q->buf, pos, &boff, seq, x->count, x->rep, x->len);
            seq += x->count;
        }
    } else {
        pos = frame_record(q->buf, pos, &boff, seq, count, rep, rep_len);
    }
    out[4] = pos;
    int64_t r = write_sync(fd, q->buf, pos, offset, 0, out);
    if (r < 0) return r;
    if (do_sync) start_writeback(fd, offset, pos);
    r = n == 0 ? insert_batch(mem, rep, rep_len, first_seq, count, out)
               : insert_group(mem, w, n, first_seq, out);
    if (r < 0) return r;
    if (do_sync && fdatasync(fd) != 0) {
        out[3] = 2;
        return -(int64_t)errno;
    }
    return 0;
}

int64_t lsm_cq_commit_kv(lsm_cq *q, int fd, uint64_t offset, uint64_t block_offset, int do_sync, void *mem,
                         uint64_t seq, int kind, const uint8_t *key, size_t klen, const uint8_t *value,
                         size_t vlen, uint64_t *out) {
    /* lsm_cq_commit_framed (n == 0) of the batch holding the single entry (kind, key, value) -- a PUT,
     * or a DELETE (value ignored) -- encoded here as WriteBatch does (docs/format.md "WAL record
     * payload"), so a single put or delete is one call from Python. The caller holds the commit
     * section and checked the key (1..65535 bytes) and value (< 2**32 bytes). out[] as
     * lsm_cq_commit_framed, plus out[5] = the entries' encoded length (the batch's size is 12 more).
     * LSM_EINVAL for another kind or a sequence number past 56 bits, before anything is written. */
    out[5] = 0;
    if ((kind != KIND_PUT && kind != KIND_DELETE) || seq > MAX_SEQUENCE || seq == 0) {
        out[0] = out[1] = out[2] = out[3] = out[4] = 0;
        return LSM_EINVAL;
    }
    if (kind == KIND_DELETE) vlen = 0;
    size_t need = 1 + 10 + klen + 10 + vlen;
    if (need > q->rep_cap) {
        size_t cap = q->rep_cap ? q->rep_cap : 4096;
        while (cap < need) cap *= 2;
        uint8_t *b = realloc(q->rep, cap);
        if (!b) {
            out[0] = out[1] = out[2] = out[3] = out[4] = 0;
            return LSM_ESPACE;
        }
        q->rep = b;
        q->rep_cap = cap;
    }
    size_t n = encode_kv(q->rep, kind, key, klen, value, vlen);
    uint8_t *p = q->rep;
    int64_t r = lsm_cq_commit_framed(q, fd, offset, block_offset, do_sync, mem, seq, 0, p, n, 1, out);
    out[5] = n;
    return r;
}

int64_t lsm_wal_commit_one(int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync, void *mem,
                           const uint8_t *rep, size_t rep_len, uint64_t seq, uint64_t count, uint64_t *out) {
    /* lsm_cq_commit for one batch outside the queue (a writer alone, holding the commit section): the
     * same out[] and returns. */
    out[0] = out[1] = out[2] = out[3] = 0;
    int64_t r = write_sync(fd, buf, len, offset, do_sync, out);
    if (r < 0) return r;
    return insert_batch(mem, rep, rep_len, seq, count, out);
}

int64_t lsm_cq_commit(lsm_cq *q, int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync,
                      void *mem, uint64_t first_seq, size_t n, uint64_t *out) {
    /* The leader's I/O for the first n queued writers: write buf at offset, fdatasync if asked, then
     * insert each writer's batch at consecutive sequence numbers from first_seq. out[0] = RANGE_DEL
     * entries seen, out[1] = key and value bytes inserted, out[2] = bytes written, out[3] = the step
     * that failed (1 write, 2 sync, 3 memtable). Returns 0; -errno for a failed write or sync (nothing
     * inserted); or a memtable error (LSM_ECORRUPT, LSM_EINVAL, LSM_ESPACE) after inserting the batches
     * before the bad one. */
    out[0] = out[1] = out[2] = out[3] = 0;
    int64_t r0 = write_sync(fd, buf, len, offset, do_sync, out);
    if (r0 < 0) return r0;
    pthread_mutex_lock(&q->mu);
    lsm_cqw *w = q->head;
    pthread_mutex_unlock(&q->mu);
    return insert_group(mem, w, n, first_seq, out);
}

int64_t lsm_write_zero_pages(int fd, uint64_t start, uint64_t end) {
    /* Zeros over [start, end) of fd, one pwrite per 4 KiB page (the first up to a page boundary): the
     * WAL's zero-ahead (lsmmail/engine/fs.py ZERO_AHEAD, whose pure twin is the same loop in Python; a
     * larger write would put the zeros in large page-cache folios, which later small appends would
     * dirty whole). In C the 64 writes of a 256 KiB zero-ahead run without the GIL and without Python
     * per page: 167 vs 201 us here. Then the zeros' writeback is started (start_writeback), so the
     * device writes them while the next groups form instead of inside the next fdatasync, which would
     * otherwise write these 256 KiB beside its own few KiB (8 synced threads, 17 interleaved pairs:
     * +6% puts/s median, 15 of 17 faster; the pure twin cannot call sync_file_range and skips this hint:
     * same bytes). Returns 0, or -errno (the bytes before the failed page are zeros). */
    static const uint8_t zero[4096];
    const uint64_t from = start;
    while (start < end) {
        size_t n = 4096 - (size_t)(start % 4096);
        if (n > end - start) n = (size_t)(end - start);
        ssize_t k = pwrite(fd, zero, n, (off_t)start);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -(int64_t)errno;
        }
        if (k == 0) return -EIO;
        start += (uint64_t)k;
    }
    if (end > from) start_writeback(fd, from, (size_t)(end - from));
    return 0;
}
