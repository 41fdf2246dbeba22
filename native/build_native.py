"""cffi build script for ``lsmmail._native`` (API mode: a real C extension, compiled at install time).

``setup.py`` names it in ``cffi_modules``; it can also be run directly (``python native/build_native.py``)
to build the extension in place for development.

The ``cdef`` below is the whole surface Python sees; ``native/lsm_native.h`` documents each function.
cffi releases the GIL around every API-mode call, so flushes and compactions running these kernels on a
background thread do not stall Python threads.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# Every ``native/*.c`` is compiled; a kernel group may add its declarations in ``native/NAME.cdef`` (and
# its header in ``native/NAME.h``), so new kernels do not all edit this file.
SOURCES = sorted(p.name for p in HERE.glob("*.c"))
HEADERS = sorted(p.name for p in HERE.glob("*.h"))

CDEF = """
#define LSM_ECORRUPT -1
#define LSM_ESPACE -2
#define LSM_EINVAL -3

int64_t lsm_varint_encode(const uint64_t *vals, size_t n, uint8_t *out, size_t cap);
int64_t lsm_varint_decode(const uint8_t *buf, size_t len, uint64_t *out, size_t max_n, size_t *consumed);

void lsm_bloom_build(const uint64_t *hashes, size_t n, uint8_t *bits, size_t nbytes, uint32_t k);
void lsm_bloom_probe(const uint8_t *filter, size_t len, const uint64_t *hashes, size_t n, uint8_t *out);
int lsm_bloom_may_contain(const uint8_t *filter, size_t len, uint64_t h);

int64_t lsm_block_decode(const uint8_t *blk, size_t len, uint8_t *keybuf, size_t keycap, uint64_t *key_end,
                         uint64_t *val_off, uint64_t *val_len, size_t max_n, uint64_t *need);
int64_t lsm_block_decode_data(const uint8_t *blk, size_t len, uint8_t *keybuf, size_t keycap,
                              uint64_t *key_end, uint64_t *seq, uint8_t *kind, uint64_t *val_off,
                              uint64_t *val_len, size_t max_n, uint64_t *need);
int64_t lsm_block_seek(const uint8_t *blk, size_t len, const uint8_t *target, size_t tlen, int internal,
                       uint8_t *keyout, size_t keycap, uint64_t *found);
int64_t lsm_block_encode(const uint8_t *keys, const uint64_t *key_end, const uint8_t *vals,
                         const uint64_t *val_end, size_t n, uint32_t restart_interval, uint8_t *out,
                         size_t cap);

int64_t lsm_merge_runs(const uint8_t *keys, const uint64_t *key_end, const uint64_t *seqs,
                       const uint64_t *run_end, size_t k, uint64_t *order, uint8_t *new_user_key);
int lsm_compare_internal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

int64_t lsm_wal_frame(const uint8_t *payloads, const uint64_t *payload_end, size_t nrec,
                      uint64_t block_offset, uint8_t *out, size_t cap, uint64_t *frag_start,
                      size_t max_frags, uint64_t *nfrags);

int64_t lsm_group_tokens(const uint8_t *buf, size_t len, size_t ntok, uint32_t *scratch, uint32_t *table,
                         size_t table_size, uint32_t *offsets, uint8_t *enc_out, uint8_t *terms_out,
                         size_t *terms_len);
"""


def _rel(name: str) -> str:
    # setuptools wants source paths relative to the project root (where setup.py runs); a direct run
    # compiles in a temporary directory, so it needs absolute ones.
    path = HERE / name
    if __name__ == "__main__":
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


ffibuilder = FFI()
ffibuilder.cdef(CDEF + "".join(p.read_text() for p in sorted(HERE.glob("*.cdef"))))
ffibuilder.set_source(
    "lsmmail._native",
    "".join(f'#include "{h}"\n' for h in HEADERS),
    sources=[_rel(s) for s in SOURCES],
    include_dirs=[_rel(".")],
    # -O2: the kernels are simple loops; -O3 measured no faster here and grows the binary.
    extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    import os
    import shutil
    import tempfile

    # A private build directory and an atomic rename: several builds may run at once, and processes that
    # have the old extension mapped keep their (unlinked) copy instead of seeing it rewritten under them.
    with tempfile.TemporaryDirectory(prefix="lsmmail-native-") as tmp:
        built = ffibuilder.compile(tmpdir=tmp, verbose=False)
        dest = HERE.parent / "lsmmail" / Path(built).name
        staged = dest.with_name(dest.name + f".{os.getpid()}.tmp")
        shutil.copy(built, staged)
        os.replace(staged, dest)
    print(f"built {dest}")
