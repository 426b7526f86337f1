"""Which object sits in which slot of which bucket (upstream ``multiplex_utils.MultiplexState``).

Objects (indices 0..N-1 in the order they were added) are placed into buckets of ``multiplex_count`` slots;
a bucket is filled before a new one is opened, and removing objects frees their slots (a bucket left empty
is dropped, and the remaining objects are renumbered 0..N'-1 in order). ``mux`` turns per-object tensors
(N, ...) into per-slot ones (buckets, M, ...) with zeros in empty slots; ``demux`` is its inverse.

Both are exact gathers (upstream multiplies by 0/1 matrices, which gives the same numbers for finite inputs).
"""

from __future__ import annotations

import torch

EMPTY = -1  # an empty slot
REMOVED = -1116  # a slot whose object was removed (upstream's marker; kept so slots are not refilled mid-bucket)


class MultiplexState:
    """The slot assignment of N objects to buckets of ``multiplex_count`` slots (``capacity`` usable ones)."""

    def __init__(self, multiplex_count: int, capacity: int | None = None):
        self.multiplex_count = multiplex_count
        self.capacity = multiplex_count if capacity is None else capacity
        self.buckets: list[list[int]] = []
        self._slots: dict[torch.device, torch.Tensor] = {}  # slot_of() per device, until the assignment changes

    # ------------------------------------------------------------------ bookkeeping
    @property
    def num_buckets(self) -> int:
        return len(self.buckets)

    @property
    def num_objects(self) -> int:
        return sum(1 for bucket in self.buckets for x in bucket if x >= 0)

    @property
    def available_slots(self) -> int:
        """Slots that can still take an object (a removed object's slot is not reused)."""
        return sum(1 for bucket in self.buckets for i in range(self.capacity) if bucket[i] == EMPTY)

    def add_objects(self, count: int, allow_new_buckets: bool = True) -> list[int]:
        """Append ``count`` new objects (indices N..N+count-1): fill free slots first, then open buckets
        (``ValueError`` when that is needed and not allowed)."""
        if not allow_new_buckets and count > self.available_slots:
            raise ValueError(f"{count} objects do not fit the {self.available_slots} free slots")
        first = self.num_objects
        new = list(range(first, first + count))
        pending = list(new)
        for bucket in self.buckets:
            for i in range(self.capacity):
                if pending and bucket[i] == EMPTY:
                    bucket[i] = pending.pop(0)
        self._slots.clear()
        while pending:
            bucket = [EMPTY] * self.multiplex_count
            for i in range(min(self.capacity, len(pending))):
                bucket[i] = pending.pop(0)
            self.buckets.append(bucket)
        return new

    def remove_objects(self, indices: list[int]) -> list[int]:
        """Remove objects by index; drop buckets left without objects; renumber the rest in order.
        Returns the indices of the buckets kept (in the old numbering)."""
        gone = set(indices)
        self._slots.clear()
        for bucket in self.buckets:
            for i, x in enumerate(bucket):
                if x in gone:
                    bucket[i] = REMOVED
        kept = [b for b, bucket in enumerate(self.buckets) if any(x >= 0 for x in bucket)]
        self.buckets = [self.buckets[b] for b in kept]
        order = sorted(x for bucket in self.buckets for x in bucket if x >= 0)
        renumber = {old: new for new, old in enumerate(order)}
        self.buckets = [[renumber.get(x, x) for x in bucket] for bucket in self.buckets]
        return kept

    def slot_of(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N,) flat slot index (bucket * M + slot) of each object, on ``device`` (made once per assignment: the
        tracker muxes and demuxes several times a frame)."""
        device = torch.device(device)
        if device not in self._slots:
            slots = [0] * self.num_objects
            for b, bucket in enumerate(self.buckets):
                for i, x in enumerate(bucket):
                    if x >= 0:
                        slots[x] = b * self.multiplex_count + i
            self._slots[device] = torch.tensor(slots, dtype=torch.long, device=device)
        return self._slots[device]

    def valid_mask(self) -> torch.Tensor:
        """(buckets, M) bool: which slots hold an object."""
        return torch.tensor([[x >= 0 for x in bucket] for bucket in self.buckets], dtype=torch.bool)

    # ------------------------------------------------------------------ tensors
    def mux(self, x: torch.Tensor) -> torch.Tensor:
        """Per-object (N, ...) -> per-slot (buckets, M, ...), zeros in slots without an object."""
        if x.shape[0] != self.num_objects:
            raise ValueError(f"{x.shape[0]} rows for {self.num_objects} objects")
        out = x.new_zeros((self.num_buckets * self.multiplex_count, *x.shape[1:]))
        out[self.slot_of(x.device)] = x
        return out.view(self.num_buckets, self.multiplex_count, *x.shape[1:])

    def demux(self, x: torch.Tensor) -> torch.Tensor:
        """Per-slot (buckets, M, ...) -> per-object (N, ...)."""
        if tuple(x.shape[:2]) != (self.num_buckets, self.multiplex_count):
            raise ValueError(f"expected ({self.num_buckets}, {self.multiplex_count}, ...), got {tuple(x.shape)}")
        return x.flatten(0, 1)[self.slot_of(x.device)]
