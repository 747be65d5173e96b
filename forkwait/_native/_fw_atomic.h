/* The one vocabulary of atomic operations for forkwait's C code (every
 * header under _native/ and _pool/ uses these names; Cython code gets them
 * from _atomic.pxd). GCC/Clang __atomic builtins, type-generic: `p` points
 * to an int, a long long, a pointer.
 *
 * The plain names are sequentially consistent: every handshake of the pool
 * (a waiter counts itself, then reads the state; the completer writes the
 * state, then reads the count) needs that order, and on x86-64 a seq_cst
 * load is a plain load. The suffixed ones are for the places that say why
 * a weaker order is enough:
 *   _ACQ  acquire (loads)      _REL    release (stores)
 *   _RLX  relaxed             _ACQREL acquire-release (read-modify-write)
 */
#ifndef FORKWAIT_FW_ATOMIC_H
#define FORKWAIT_FW_ATOMIC_H

#define FW_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define FW_LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define FW_LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)

#define FW_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define FW_STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define FW_STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/* add `v` and return the new value */
#define FW_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#define FW_ADD_ACQREL(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
/* the value before the add, relaxed: a claim counter whose claims carry no data */
#define FW_FETCH_ADD_RLX(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

/* the old value, `v` stored */
#define FW_XCHG(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
#define FW_XCHG_ACQ(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQUIRE)

/* Compare-and-swap: if *p == *expp, store `desired` and return 1; else copy
 * *p into *expp and return 0 (a loop retries with the value it saw). */
#define FW_CAS(p, expp, desired) \
    __atomic_compare_exchange_n((p), (expp), (desired), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)
#define FW_CAS_ACQREL(p, expp, desired) \
    __atomic_compare_exchange_n((p), (expp), (desired), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
/* weak (may fail spuriously: for loops), release on success */
#define FW_CAS_WEAK_REL(p, expp, desired) \
    __atomic_compare_exchange_n((p), (expp), (desired), 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)

#define FW_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* A count that only the calling thread writes: a plain add that other
 * threads may read (no locked instruction). */
#define FW_OWN_ADD(p, v) FW_STORE_RLX((p), FW_LOAD_RLX(p) + (v))

/* The int forms Cython calls (a macro's result type is unknown to it). */
static inline int fw_cas_int(int *p, int expected, int desired) {
    return FW_CAS(p, &expected, desired);
}

/* One step of a spin loop: tell the CPU (and a hyperthread sibling). */
#if defined(__x86_64__) || defined(__i386__)
#define FW_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FW_PAUSE() __asm__ __volatile__("yield")
#else
#define FW_PAUSE() ((void)0)
#endif

#endif
