# Shared by the tools: one copy in the "tools" interpreter (see ../gateway.toml).
import threading

_lock = threading.Lock()
_count = 0


def count(add=0):
    global _count
    with _lock:
        _count += add
        return _count
