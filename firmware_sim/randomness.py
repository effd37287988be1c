"""Counter-based randomness: every random number is a pure function of (seed, counters).

A simulated meter must give the same reading for the same instant however it is polled:
read every minute, once an hour, after a restart, or out of order. Stateful generators
cannot promise that; hashing the seed with the time step can. SplitMix64 is small, fast
in numpy, and has no visible correlation between neighbouring counters.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["key_for", "uniform", "normal", "choice_index"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def key_for(*parts: object) -> int:
    """A 64-bit key from any labels (seed, meter id, purpose), stable across runs and platforms."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _bits(key: int, counters: np.ndarray | int) -> np.ndarray:
    c = np.asarray(counters, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        return _mix(_mix(c ^ np.uint64(key)) + np.uint64(key))


def uniform(key: int, counters: np.ndarray | int) -> np.ndarray:
    """Uniform numbers in [0, 1), one per counter."""
    return (_bits(key, counters) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal(key: int, counters: np.ndarray | int) -> np.ndarray:
    """Standard normal numbers, one per counter (Box-Muller on two hashed streams)."""
    u1 = uniform(key, counters)
    u2 = uniform(key ^ 0x5DEECE66D, counters)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def choice_index(key: int, counter: int, weights: list[float] | tuple[float, ...]) -> int:
    """Index drawn with the given (unnormalised) weights."""
    w = np.asarray(weights, dtype=float)
    u = float(uniform(key, counter)) * w.sum()
    return int(min(np.searchsorted(np.cumsum(w), u, side="right"), len(w) - 1))
