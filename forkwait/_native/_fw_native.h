/* A forked kernel call that runs without the GIL ("GIL-free task").
 *
 * An op that registers with the pool (pool._register_native) gives fork() a
 * prepare function: called at fork, with the GIL, on the call's arguments, it
 * checks them, allocates the result and returns (capsule, result), or None
 * to leave the call to the ordinary path (which then reports any error
 * through the future, as for any task). The capsule holds a struct that
 * starts with fw_native_call; `run` computes the result in place and cannot
 * fail. Whoever claims the task runs `run` without the GIL: a pool worker
 * then completes the future without taking the GIL at all unless a callback
 * or a concurrent.futures waiter needs it (see _native_run_nogil in pool.pyx).
 */
#ifndef FW_NATIVE_H
#define FW_NATIVE_H

typedef struct fw_native_call {
    void (*run)(struct fw_native_call *self);  /* without the GIL; cannot fail */
    int intra;                                 /* the forking thread's intra-op setting
                                                  (filled in by fork) */
} fw_native_call;

#define FW_NATIVE_CAPSULE "forkwait.native_call"

#endif
