"""TensorFlow's best-fit-with-coalescing (BFC) allocator, replayed to estimate resident memory.

TensorFlow serves tensors from a BFC allocator: on x86 CPUs (oneDNN's allocator, on by
default) and on GPUs alike. It grows by regions of doubling size and keeps them, so what a
process holds depends on how the regions grew, not only on the bytes in use at the peak.
Measured on VGG16 with a frozen backbone: at batch 40, block1's 514 MB maps fit 512 MiB
regions and the process holds 1.39 GB; at batch 44 they are 565 MB, each opens a 1 GiB
region, and the process holds 2.37 GB, though the tensors in use peak at 1.24 GB either way.

``BFCReplay`` plays a sequence of allocations and frees through the same rules (256-byte
rounding, best fit by size then address, splitting, coalescing, doubling regions) and
reports the bytes the regions have had written to, which is what stays resident.

Example:
    >>> replay = BFCReplay()
    >>> replay.allocate("a", 3 << 20); replay.allocate("b", 3 << 20); replay.free("a")
    >>> [size >> 20 for size in replay.regions], replay.resident >> 20  # MiB
    ([4, 4], 6)
"""

from __future__ import annotations

from collections.abc import Hashable

MIN_ALLOCATION = 256
FIRST_REGION = 2 << 20
# A free chunk is split unless the leftover is small: under half the chunk and under this.
MAX_INTERNAL_FRAGMENTATION = 128 << 20


class BFCReplay:
    """Replays allocations through BFC's rules; ``resident`` is the bytes written to so far."""

    def __init__(self) -> None:
        # Per region: its chunks in address order, each [offset, size, free].
        self._chunks: list[list[list[int]]] = []
        self._written: list[int] = []
        self._next_region = FIRST_REGION
        self._where: dict[Hashable, tuple[int, list[int]]] = {}
        self.regions: list[int] = []

    @property
    def resident(self) -> int:
        """Bytes written to in all regions, counting each region up to its furthest write."""
        return sum(self._written)

    def allocate(self, key: Hashable, size: int) -> None:
        """Serve ``size`` bytes for ``key`` from the best-fitting free chunk, or a new region."""
        rounded = max(MIN_ALLOCATION, -(-size // MIN_ALLOCATION) * MIN_ALLOCATION)
        found = self._best_fit(rounded)
        if found is None:
            self._extend(rounded)
            found = self._best_fit(rounded)
        region, index = found
        chunks = self._chunks[region]
        chunk = chunks[index]
        leftover = chunk[1] - rounded
        if chunk[1] >= 2 * rounded or leftover >= MAX_INTERNAL_FRAGMENTATION:
            chunks.insert(index + 1, [chunk[0] + rounded, leftover, True])
            chunk[1] = rounded
        chunk[2] = False
        # A tensor writes its own bytes, not the whole of an unsplit chunk.
        self._written[region] = max(self._written[region], chunk[0] + rounded)
        self._where[key] = (region, chunk)

    def free(self, key: Hashable) -> None:
        """Give ``key``'s chunk back, merged with free neighbours in its region."""
        region, chunk = self._where.pop(key)
        chunks = self._chunks[region]
        chunk[2] = True
        index = next(i for i, c in enumerate(chunks) if c is chunk)
        if index + 1 < len(chunks) and chunks[index + 1][2]:
            chunk[1] += chunks.pop(index + 1)[1]
        if index > 0 and chunks[index - 1][2]:
            chunks[index - 1][1] += chunks.pop(index)[1]

    def _best_fit(self, rounded: int) -> tuple[int, int] | None:
        # Smallest free chunk, then lowest address; the OS maps later regions below earlier
        # ones, so a later region's chunk comes first among equals.
        best: tuple[int, int, int] | None = None
        found = None
        for region, chunks in enumerate(self._chunks):
            for index, (offset, size, free) in enumerate(chunks):
                if free and size >= rounded:
                    key = (size, -region, offset)
                    if best is None or key < best:
                        best, found = key, (region, index)
        return found

    def _extend(self, rounded: int) -> None:
        # The region size doubles until the request fits; a region that was big enough
        # already doubles the next one instead.
        grew = False
        while rounded > self._next_region:
            self._next_region *= 2
            grew = True
        self._chunks.append([[0, self._next_region, True]])
        self._written.append(0)
        self.regions.append(self._next_region)
        if not grew:
            self._next_region *= 2
