"""Decisions/s of Python's `limits` package (Redis storage, moving window) at a concurrency.

Usage: python3 limits_bench.py redis://127.0.0.1:PORT CONCURRENCY DECISIONS
Prints one number: decisions per second. Run by `toolops-bench ratelimit` for comparison.
"""
import sys
import threading
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

url, concurrency, decisions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
storage = storage_from_string(url)
limiter = MovingWindowRateLimiter(storage)
limit = parse("1000000000/second")
per_thread = max(1, decisions // concurrency)
for _ in range(200):
    limiter.hit(limit, "bench")


def work():
    for _ in range(per_thread):
        limiter.hit(limit, "bench")


threads = [threading.Thread(target=work) for _ in range(concurrency)]
start = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"{per_thread * concurrency / (time.perf_counter() - start):.0f}")
