/* ops.matmul's K split (_matmul.pyx, set_ksplit): the buffer that takes the
 * second half's product before it is added in, kept per calling thread (a
 * fresh one per call was a fresh mapping of pages to fault in: 256 x 256
 * float64 ran 0.86x NumPy that way). Up to FW_KBUF_MAX bytes are kept;
 * larger products allocate per call, where the faults weigh less against
 * the GEMM. A thread's buffer is never freed: one per thread that ran a K
 * split, at most FW_KBUF_MAX bytes.
 *
 * Compiled into _matmul only. */
#ifndef FW_KBUF_H
#define FW_KBUF_H

#include <stdlib.h>

#define FW_KBUF_MAX (8u << 20)

static __thread void *fw_kbuf = NULL;
static __thread size_t fw_kbuf_size = 0;

/* A buffer of at least `size` bytes (NULL: no memory); give it back with
 * fw_kbuf_put. */
static void *fw_kbuf_get(size_t size) {
    if (size > FW_KBUF_MAX) return malloc(size);
    if (size > fw_kbuf_size) {
        free(fw_kbuf);
        fw_kbuf = malloc(size);
        fw_kbuf_size = fw_kbuf != NULL ? size : 0;
    }
    return fw_kbuf;
}

static void fw_kbuf_put(void *p) {
    if (p != fw_kbuf) free(p);
}

#endif
