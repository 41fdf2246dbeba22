/* tablefind.c: bloom probe + index search of a point lookup (lsmmail/native.py table_find_pure is the twin). */
#ifndef LSM_TABLEFIND_H
#define LSM_TABLEFIND_H
#include <stddef.h>
#include <stdint.h>

int64_t lsm_table_find(const uint8_t *filter, size_t flen, uint64_t h, const uint8_t *ikeys,
                       const uint64_t *ikey_end, const uint64_t *iseqs, size_t n, const uint8_t *ukey,
                       size_t ulen, uint64_t snap);

#endif
