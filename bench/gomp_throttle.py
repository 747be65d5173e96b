"""libgomp's throttled spin, shown (docs/threads.md): the main thread's 2-thread
chain of 12 x (gelu, layer_norm, tanh) on 64x1024 float32, median ms, with K more
threads alive that each started a 2-thread team (plain threading.Thread, not
forkwait's pool: nothing gives their teams back), then after they exit. The OS
thread count (/proc/self/task) is printed beside each.

    python bench/gomp_throttle.py K          # K = 1, 2, ...
    OMP_WAIT_POLICY=active python bench/gomp_throttle.py 2
    GOMP_SPINCOUNT=100 python bench/gomp_throttle.py 1
"""
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import forkwait as fw  # noqa: E402

x = np.random.default_rng(0).random((64, 1024)).astype(np.float32)


def chain(h=x, steps=12):
    for _ in range(steps):
        h = fw.ops.tanh(fw.ops.layer_norm(fw.ops.gelu(h)))
    return h


def t(fn, n=40):
    v = []
    for _ in range(n):
        s = time.perf_counter()
        fn()
        v.append(time.perf_counter() - s)
    return statistics.median(v) * 1e3


def ntask():
    return len(os.listdir("/proc/self/task"))


fw.set_num_threads(2)
chain()
res = [f"K=0 tasks={ntask()} {t(chain):.2f}"]
stop = threading.Event()
threads, ready = [], []


def holder(i):
    fw.ops.exp(np.ones(1 << 20))  # a 2-thread team in this thread: its own libgomp pool
    ready.append(i)
    stop.wait()


for k in range(1, int(sys.argv[1]) + 1):
    th = threading.Thread(target=holder, args=(k,))
    th.start()
    threads.append(th)
    while len(ready) < k:
        time.sleep(0.001)
    time.sleep(0.05)
    res.append(f"K={k} tasks={ntask()} {t(chain):.2f}")
stop.set()
for th in threads:
    th.join()
time.sleep(0.05)  # libgomp frees an exiting thread's pool (its thread-exit destructor)
res.append(f"joined tasks={ntask()} {t(chain):.2f}")
env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
               if k in os.environ) or "default"
with open("/proc/loadavg") as f:
    load = " ".join(f.read().split()[:3])
print(f"[{env}] load {load}: " + " | ".join(res))
