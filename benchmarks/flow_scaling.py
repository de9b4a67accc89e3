"""Thread scaling of PairFlow.flows (DIS medium, 512x384) with OpenCV's own threads on/off."""
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np, cv2
sys.path.insert(0, os.getcwd())
from fast3r_ns.geometry.flow import PairFlow, FlowOptions
import threading
rng = np.random.default_rng(0)
H, W = 384, 512
base = cv2.GaussianBlur((rng.random((H * 2, W * 2)) * 255).astype(np.float32), (0, 0), 3)
greys = [np.clip(cv2.normalize(base[i:i + H, i:i + W], None, 0, 255, cv2.NORM_MINMAX), 0, 255).astype(np.uint8) for i in range(0, 64, 2)]
pairs = [(i, (i + k) % len(greys)) for i in range(len(greys)) for k in (1, 2, 3, 4)][:96]
pred = np.zeros((H, W, 2), np.float32)
def run(threads, cv_threads):
    cv2.setNumThreads(cv_threads)
    local = threading.local()
    def one(p):
        if not hasattr(local, "pf"): local.pf = PairFlow(FlowOptions())
        return local.pf.flows((greys[p[0]], greys[p[1]]), (pred, pred))
    tic = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool: list(pool.map(one, pairs))
    return time.perf_counter() - tic
cores = len(os.sched_getaffinity(0))
print("cores", cores, "opencv default threads", cv2.getNumThreads())
default = cv2.getNumThreads()
for threads, cvt in ((1, default), (1, 1), (cores, default), (cores, 1), (cores // 2, 1), (cores // 2, 2)):
    t = run(threads, cvt)
    print(f"python threads {threads:2d}, opencv threads {cvt:2d}: {t:.2f} s for {len(pairs)} pairs, {1000 * t / len(pairs):.1f} ms/pair")
import multiprocessing as mp
def work(p):
    pf = PairFlow(FlowOptions())
    f, b = pf.flows((greys[p[0]], greys[p[1]]), (pred, pred))
    return f[::2, ::2].copy()
for procs in (cores, cores // 2):
    cv2.setNumThreads(1)
    tic = time.perf_counter()
    with mp.get_context("fork").Pool(procs) as pool:
        list(pool.imap(work, pairs, chunksize=2))
    t = time.perf_counter() - tic
    print(f"fork processes {procs:2d}: {t:.2f} s for {len(pairs)} pairs, {1000 * t / len(pairs):.1f} ms/pair")
