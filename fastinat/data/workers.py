"""`InatDL`: fastai's `TfmdDL` with loader workers that live across epochs and seeded batches.

fastai starts new worker processes at the start of every epoch (its `persistent_workers`
has no effect: each `iter()` builds a new PyTorch iterator). On a CPU each start forks the
whole training process and pays for its page tables and copy-on-write faults, every epoch,
for the train and the valid loader. `InatDL` keeps one PyTorch `DataLoader` with
`persistent_workers=True` per fastinat loader and sends it each epoch's work:

* the main process shuffles (fastai's `get_idxs`, the same order as fastai's) and cuts the
  order into batches; every batch goes out with its own seed, drawn from the main process's
  torch generator once per epoch (as PyTorch draws its workers' base seed), so
* a worker seeds `random`, `numpy` and `torch` from that seed, then runs fastai's own
  `do_item` / `do_batch` for the batch. The augmentation of a batch therefore depends on the
  run's seed and the batch's position only: the same batches with 0, 1 or 16 workers, and a
  resumed run sees the augmentations an uninterrupted one would.

With `num_workers=0` (and in fastai's `one_batch`/`show_batch`) the same seeded batches are
made in the main process, whose random state is saved and put back around each batch.
Workers see the loader as it was when they started; changing its batch size, transforms or
dataset afterwards starts new workers, and so does a change of an item transform's
`worker_key()` (the augmentation's sizes: progressive resizing). `close()` stops them; so
does garbage collection of the loader (a fastai loader sits in a reference cycle with its `fake_l`, so that is
`gc.collect()` time, not the moment the last name goes; `fastinat.train` closes its
loaders when fitting ends) and the end of the interpreter. Workers are forked while OpenCV runs on one thread in the main
process (`perf.opencv_threads`), so they inherit one thread and no thread pool; each sets
torch to one thread, as fastai's workers do. The main process's settings are left alone.

Internals relied on (checked by `tests/test_workers.py`, which fails with a message naming
the one that changed):

* fastai `TfmdDL`: `do_item(s)`, `do_batch(b)`, `create_batch(b)`, `get_idxs()`,
  `randomize()`, `before_iter()`, `after_iter()`, `wif()`, the pipelines `after_item`,
  `before_batch`, `after_batch` (fastcore `Pipeline`, with `.fs`), the attributes `bs`,
  `drop_last`, `device`, `pin_memory`, `timeout`, `prebatched`, `indexed`, `num_workers`,
  `offs`, and `fake_l` (its `num_workers`, `pin_memory_device`); `fa_collate`,
  `no_random`, `set_seed`, fastcore's `chunked`;
* fastai `Datasets` (the loader's dataset): `items`, `split_idx`, and `tls` (one `TfmdLists`
  per block, each with `tfms.fs`; `tls[1][i]` is item i's label);
* torch: `DataLoader(persistent_workers=, pin_memory_device=, prefetch_factor=,
  worker_init_fn=)`, `get_worker_info()`, its private `DataLoader._iterator` and the
  iterator's `_shutdown_workers()` (to stop workers on `close()`), and
  `UntypedStorage._new_shared` (batches collated straight into shared memory).
"""

from __future__ import annotations

import atexit
import os
import weakref

import torch
from fastai.data.core import TfmdDL
from fastai.data.load import fa_collate
from fastai.torch_core import TensorCategory, TensorImage, no_random, set_seed
from fastcore.basics import chunked

from ..perf import opencv_threads


class _Batches(torch.utils.data.Dataset):
    """What a worker runs: one (seed, indices) task -> one collated batch, fastai's way."""

    def __init__(self, dl: InatDL):
        self.dl = dl

    def __getitem__(self, task):
        seed, idxs = task
        set_seed(seed)
        return self.dl._make_batch(idxs)


class _Tasks(torch.utils.data.Sampler):
    """The current epoch's tasks; the main process refills it before each epoch."""

    def __init__(self):
        self.tasks: list = []

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


def _as_is(batch):
    return batch


#: The stop of every worker pool this process has running (`weakref.finalize` objects).
_RUNNING: set = set()


def _stop(loader: torch.utils.data.DataLoader, owner: int) -> None:
    """Stop a persistent DataLoader's worker processes (torch's private shutdown); only in the
    process that started them (a forked copy of the loader, in another loader's worker, must not)."""
    if loader._iterator is not None and os.getpid() == owner:
        loader._iterator._shutdown_workers()
        loader._iterator = None


def close_all_workers() -> int:
    """Stop every loader worker pool this process has running, whichever loader started it
    (copies made by fastai's `dl.new` for `get_preds`, a `validate` on a loader whose pool was
    closed, loaders nobody holds any more); returns how many pools it stopped.

    Training, evaluation and each command call it when they are done, and it runs at exit,
    before torch's own exit handler: a pool left to the interpreter's shutdown (with pinned
    memory, on torch <= 2.11) waits 5 s per worker for processes that never answer.
    """
    stopped = 0
    for stop in list(_RUNNING):
        _RUNNING.discard(stop)
        if stop.alive:
            stop()
            stopped += 1
    return stopped


def running_pools() -> int:
    """How many loader worker pools this process has running."""
    return sum(1 for stop in _RUNNING if stop.alive)


atexit.register(close_all_workers)  # after torch's import: runs before torch's own exit handler


def _worker_init(worker_id: int) -> None:
    import cv2

    torch.set_num_threads(1)  # as fastai's workers: the processes are the parallelism
    if cv2.getNumThreads() != 1:  # a spawned worker (a forked one inherits 1: `_workers`)
        cv2.setNumThreads(1)
    info = torch.utils.data.get_worker_info()
    dl = info.dataset.dl
    dl.num_workers, dl.offs = info.num_workers, info.id
    dl.wif()


class InatDL(TfmdDL):
    """A fastai `TfmdDL` whose worker processes persist across epochs (see the module docs)."""

    def create_batch(self, b):
        """fastai's collate, except that images come out channels_last (one plain copy each).

        `InatAugment` gives each image as a (3, H, W) view of (H, W, 3) pixels. Stacking them
        as (N, H, W, 3) is a straight copy, and the batch is that memory seen as (N, 3, H, W):
        the layout the models run in (fastai's `ChannelsLast` callback then has nothing to
        do, and `.float()` keeps it). In a worker the batch goes straight into shared memory,
        as PyTorch's `default_collate` does.
        """
        first = b[0] if b else None
        if not (isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], TensorImage)
                and first[0].ndim == 3 and first[0].permute(1, 2, 0).is_contiguous()):
            return super().create_batch(b)
        imgs = [x[0].permute(1, 2, 0).as_subclass(torch.Tensor) for x in b]
        out = None
        if torch.utils.data.get_worker_info() is not None:
            storage = imgs[0].untyped_storage()._new_shared(sum(x.nbytes for x in imgs))
            out = imgs[0].new_empty(0).set_(storage).view(len(imgs), *imgs[0].shape)
        x = torch.stack(imgs, 0, out=out).permute(0, 3, 1, 2)
        return (TensorImage(x), fa_collate([y for _, y in b]))

    def fuse_items(self, opener, augment) -> None:
        """Make items by calling `opener` and `augment` directly, while the pipelines are unchanged.

        fastai runs every item through its transform pipelines with type dispatch: get_x,
        the opener, parent_label, Categorize, the augmentation, ToTensor - six dispatches per
        image, 0.1-0.15 ms of a worker's time here. For the pipelines `inat_dataloaders`
        builds, an item is `augment.pixels(opener(path), train, training set)` and its
        category, so this loader makes it that way (the same tensors; a test compares both).
        Labels come from the dataset's own label pipeline, once. Any change to the dataset or the item
        transforms after this call sends items through fastai's pipelines again.
        """
        self._fused = (self._item_key(), opener, augment)

    def new(self, dataset=None, cls=None, **kwargs):
        """fastai's `new`; the copy keeps the fused items while its transforms are the same objects
        (an unlabelled `test_dl` has fewer, so it goes through fastai's pipelines)."""
        res = super().new(dataset, cls, **kwargs)
        fused = self.__dict__.get("_fused")
        if fused is not None and isinstance(res, InatDL) and res._item_key()[1:] == fused[0][1:]:
            res.fuse_items(*fused[1:])
        return res

    def _item_key(self) -> tuple:
        ds = self.dataset
        return (id(ds), tuple(id(f) for tl in getattr(ds, "tls", ()) for f in tl.tfms.fs),
                tuple(id(f) for f in self.after_item.fs))

    def do_item(self, s):
        fused = self.__dict__.get("_fused")
        if fused is None or fused[0] != self._item_key():
            return super().do_item(s)
        _, opener, augment = fused
        ds = self.dataset
        if "_labels" not in self.__dict__:
            self._labels = [int(ds.tls[1][i]) for i in range(len(ds))]
        train = bool(augment.augment and ds.split_idx == 0)
        return (augment.pixels(opener(ds.items[s]), train, ds.split_idx == 0), TensorCategory(self._labels[s]))

    def _make_batch(self, idxs):
        items = [b for b in map(self.do_item, idxs) if b is not None]
        return self.do_batch(items) if items else None

    def _tasks(self) -> list:
        order = list(self.get_idxs())
        batches = chunked(order, self.bs, self.drop_last)
        base = int(torch.empty((), dtype=torch.int64).random_().item())
        return [((base + 1_000_003 * i) % 2**63, list(b)) for i, b in enumerate(batches)]

    def _signature(self) -> tuple:
        def fn(f):  # a bound method is a new object at every access; its function is not
            return id(getattr(f, "__func__", f))

        keys = tuple(f.worker_key() for f in self.after_item.fs if hasattr(f, "worker_key"))
        return (self._item_key(), keys, self.bs, self.drop_last, self.fake_l.num_workers,
                self.pin_memory, fn(self.after_item), tuple(map(id, self.before_batch.fs)),
                fn(self.before_batch), fn(self.create_batch))

    def _workers(self, tasks: list):
        """This loader's persistent PyTorch iterator over `tasks` (started or restarted as needed)."""
        sig = self._signature()
        stop = self.__dict__.get("_pool_stop")
        if getattr(self, "_pool_sig", None) != sig or stop is None or not stop.alive:  # or closed by close_all_workers
            self.close()
            self._pool_tasks = _Tasks()
            self._pool_loader = torch.utils.data.DataLoader(
                _Batches(self), batch_size=None, sampler=self._pool_tasks, collate_fn=_as_is,
                num_workers=self.fake_l.num_workers, persistent_workers=True,
                pin_memory=self.pin_memory, pin_memory_device=self.fake_l.pin_memory_device,
                timeout=self.timeout, worker_init_fn=_worker_init, prefetch_factor=2)
            self._pool_sig = sig
        self._pool_tasks.tasks = tasks
        loader = self._pool_loader
        if loader._iterator is not None:  # the workers are up
            return iter(loader)
        with opencv_threads(1):  # they fork now: OpenCV's pool must not exist in the parent
            batches = iter(loader)
        # The workers have their copy of this loader. Without a reference back to it, the
        # pool outlives it, so garbage collection stops the workers while their queues still
        # work (inside the loader's reference cycle torch's queues close first and each
        # worker's shutdown waits out a 5 s timeout).
        loader.dataset.dl = None
        self._pool_stop = weakref.finalize(self, _stop, loader, os.getpid())
        _RUNNING.add(self._pool_stop)
        return batches

    def _in_process(self, tasks: list):
        for seed, idxs in tasks:
            with no_random(seed, reproducible=False):  # the caller's random state is put back
                b = self._make_batch(idxs)
            yield b

    def __iter__(self):
        if self.prebatched or not self.indexed:
            yield from super().__iter__()
            return
        self.randomize()
        self.before_iter()
        tasks = self._tasks()
        batches = self._in_process(tasks) if self.fake_l.num_workers == 0 else self._workers(tasks)
        for b in batches:
            if b is None:  # every item of the batch was skipped
                continue
            if self.pin_memory and type(b) is list:
                b = tuple(b)
            if self.device is not None:
                from fastai.torch_core import to_device

                # from pinned memory the copy to the GPU overlaps the next batch's wait
                b = to_device(b, self.device, non_blocking=self.pin_memory)
            yield self.after_batch(b)
        self.after_iter()

    @property
    def workers_running(self) -> bool:
        """Whether this loader's worker processes are up (started by an earlier epoch)."""
        loader = self.__dict__.get("_pool_loader")
        return loader is not None and getattr(loader, "_iterator", None) is not None

    def close(self) -> None:
        """Stop this loader's worker processes (new ones start on the next epoch)."""
        for k in ("_pool_loader", "_pool_sig"):
            self.__dict__.pop(k, None)
        stop = self.__dict__.pop("_pool_stop", None)
        if stop is not None:
            _RUNNING.discard(stop)
            stop()

    def __getstate__(self):
        state = dict(self.__dict__)
        for k in ("_pool_loader", "_pool_sig", "_pool_tasks", "_pool_stop"):
            state.pop(k, None)
        return state


def close_workers(dls) -> None:
    """Stop the worker processes of every `InatDL` of a fastai `DataLoaders`."""
    for dl in getattr(dls, "loaders", []):
        if isinstance(dl, InatDL):
            dl.close()
