"""How much memory a new allocation can have: the one place the engine asks, before allocating what a user's
input sizes (a decoded image, a run's masks, a KV cache)."""

from __future__ import annotations


def meminfo_bytes(field: str) -> int | None:
    """One /proc/meminfo field in bytes (e.g. MemAvailable, MemTotal), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes a new allocation can have: the kernel's MemAvailable, and under an address-space limit
    (`ulimit -v`) what is left of it; None where neither is known."""
    limits = [meminfo_bytes("MemAvailable"), address_space_left()]
    known = [n for n in limits if n is not None]
    return min(known) if known else None


def address_space_left() -> int | None:
    """Bytes of address space this process may still map under RLIMIT_AS, or None when unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
        return max(0, soft - mapped)
    except (ImportError, OSError, ValueError, IndexError):
        return None
