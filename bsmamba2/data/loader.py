"""The training data loader: whole batches of :class:`~bsmamba2.data.sampler.MixDataset` mixed in place.

:class:`BatchLoader` gives the same tensors as a plain DataLoader over ``MixDataset`` for about half the CPU:
each worker mixes whole batches in place into reused shared memory instead of building per-item tensors
and stacking them into new shared memory.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from bsmamba2.data.sampler import MixDataset, output_tensor


class _Batches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """What :class:`BatchLoader`'s workers index: a list of indices -> ``(mixture, targets, slot)``.

    A worker mixes each batch into one of ``slots`` output buffers of its own in shared memory, allocated on
    first use and reused from then on: fresh shared memory costs a page fault and a zeroed page per 4 KiB,
    which on a 2-core VM took twice as long as the mixing itself (2026-11-22). A slot is reused only once
    the main process handed it back (``free[slot]``, a semaphore the worker takes and BatchLoader gives back
    once the batch is copied out). Without a free slot the batch goes to new shared memory, tagged slot -1;
    nothing ever waits.
    """

    def __init__(self, dataset: MixDataset, batch_size: int, slots: int) -> None:
        self.dataset, self.batch_size, self.slots = dataset, batch_size, slots
        self.free: list[Any] = []  # slots x workers semaphores, set by BatchLoader before its workers start
        self._ring: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # this worker's buffers by slot id

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        info = torch.utils.data.get_worker_info()
        if info is not None and self.free:
            for slot in range(info.id * self.slots, (info.id + 1) * self.slots):
                if self.free[slot].acquire(block=False):
                    try:
                        if slot not in self._ring:
                            n, s = self.dataset.segment, len(self.dataset.cfg.targets)
                            b = self.batch_size
                            self._ring[slot] = output_tensor((b, 2, n)), output_tensor((b, s, 2, n))
                        return (*self.dataset.batch(indices, out=self._ring[slot]), slot)
                    except BaseException:
                        self.free[slot].release()  # the batch never left this worker
                        raise
        return (*self.dataset.batch(indices), -1)


class BatchLoader:
    """The training data loader: batches ``(mixture (B, 2, N), targets (B, S, 2, N))`` of ``sampler``'s
    indices, the same tensors as ``DataLoader(dataset, batch_size, sampler=sampler, drop_last=drop_last)``
    yields (that per-item path stays available and readable), for a fraction of the CPU.

    A ``DataLoader`` over index lists (``batch_size=None`` and a ``BatchSampler``) whose workers each mix a
    whole batch in place (:meth:`MixDataset.batch`) into reused shared-memory buffers (:class:`_Batches`),
    instead of building per-item tensors and stacking them into new shared memory. Each batch is copied out
    of its buffer in the main process (by the DataLoader's pinning thread when ``pin_memory``, else here)
    before the buffer is handed back, so a batch stays valid for as long as the caller keeps it.
    """

    def __init__(
        self,
        dataset: MixDataset,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        drop_last: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        # a worker has at most prefetch_factor batches in flight (a few more when the main process holds
        # batches back to keep order); one slot more lets it start the next while the main process copies
        self.batches = _Batches(dataset, batch_size, slots=prefetch_factor + 1)
        self.num_workers = num_workers
        self.persistent = persistent_workers and num_workers > 0
        self.loader = DataLoader(
            self.batches,
            batch_size=None,  # batching is done by the sampler and the dataset
            sampler=BatchSampler(sampler, batch_size, drop_last),
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.num_workers > 0 and not (self.persistent and self.batches.free):
            # new workers (started by iter() below) get every slot free
            self.batches.free = [mp.BoundedSemaphore(1) for _ in range(self.num_workers * self.batches.slots)]
        free = self.batches.free
        mapped: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for mix, targets, slot in self.loader:
            if slot >= 0:
                if mix.is_shared():  # not copied out by the pinning thread: copy it out here
                    # kept mapped, torch finds the slot's buffers again next time (it caches shared storages
                    # by file): no new mapping and no page faults per batch
                    mapped[slot] = mix, targets
                    mix, targets = _copy(mix), _copy(targets)
                free[slot].release()
            yield mix, targets


def _copy(x: torch.Tensor) -> torch.Tensor:
    # NumPy: a plain single-threaded memcpy (torch's copy would wake, then spin, the intra-op threads)
    return torch.from_numpy(np.array(x.numpy(), copy=True))
