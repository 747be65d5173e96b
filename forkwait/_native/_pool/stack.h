/* How deep this thread is: near RecursionError, or near the end of its C
 * stack. A waiter that is too deep runs nothing more inline (pool.pyx blocks
 * it and starts a compensating thread).
 */
#ifndef FORKWAIT_POOL_STACK_H
#define FORKWAIT_POOL_STACK_H

#include "state.h"

/* ------------------------------------------------------------ stack depth */
/* 1 when this thread is near RecursionError (GIL held): fewer than
 * `py_margin` Python frames left, or, on CPython 3.12 and 3.13, less than a
 * quarter of the separate count of C-level recursion, which every nested
 * fork/wait level uses too (the call of `wait` and the eval loop's entry:
 * two units of 1500 on 3.12, so without this check a chain of waits failed
 * with RecursionError there before the Python count reached its margin). */
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000
#  if defined(Py_C_RECURSION_LIMIT)
#    define FW_C_RECURSION_LIMIT Py_C_RECURSION_LIMIT
#  elif defined(C_RECURSION_LIMIT)
#    define FW_C_RECURSION_LIMIT C_RECURSION_LIMIT
#  else
#    define FW_C_RECURSION_LIMIT 1500
#  endif
#endif
static inline int fw_recursion_low(int py_margin) {
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030C0000
    if (ts->py_recursion_remaining < py_margin) return 1;
#  ifdef FW_C_RECURSION_LIMIT
    if (ts->c_recursion_remaining < FW_C_RECURSION_LIMIT / 4) return 1;
#  endif
    return 0;
#elif PY_VERSION_HEX >= 0x030B0000
    return ts->recursion_remaining < py_margin;
#else
    return Py_GetRecursionLimit() - ts->recursion_depth < py_margin;
#endif
}

static __thread char *fw_stack_lo = NULL;      /* this thread's stack: lowest address */
static __thread char *fw_stack_limit = NULL;   /* below it, the stack is low (NULL: unknown) */

/* Find this thread's stack once; the margin is `margin` bytes, at most a
 * quarter of the stack. */
static inline void fw_stack_probe(size_t margin) {
    fw_stack_lo = (char *)1;
    fw_stack_limit = NULL;
#if defined(__linux__) && defined(_GNU_SOURCE)
    {
        pthread_attr_t a;
        void *addr = NULL;
        size_t size = 0;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            if (pthread_attr_getstack(&a, &addr, &size) == 0 && addr != NULL) {
                fw_stack_lo = (char *)addr;
                fw_stack_limit = fw_stack_lo + (size / 4 < margin ? size / 4 : margin);
            }
            pthread_attr_destroy(&a);
        }
    }
#endif
}

/* 1 when less than the margin of C stack is left below this frame. An
 * address outside the thread's stack (another stack, as some coroutine
 * libraries use) or an unknown stack: 0. */
static inline int fw_stack_low(size_t margin) {
    char here = 0;
    char *volatile p = &here;
    if (fw_stack_lo == NULL) fw_stack_probe(margin);
    return fw_stack_limit != NULL && p >= fw_stack_lo && p < fw_stack_limit;
}

#endif
