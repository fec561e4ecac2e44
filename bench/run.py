"""`make bench` (python -m bench.run from the repository root): every benchmark table in turn."""
from __future__ import annotations

from bench import cold_import, gmail_ops, read_ops, realtime, request_overhead

if __name__ == "__main__":
    cold_import.main()
    request_overhead.main()
    gmail_ops.main()
    read_ops.main()
    realtime.main()
