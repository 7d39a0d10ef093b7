"""`hashae index FOLDER`: scan -> plan -> (train) -> read + encode -> write, incremental and crash-safe.

    scan     hashae.folders.scan_folder: the image files (sorted relative paths, size, mtime), and
             what cannot be used or listed, recorded with its reason
    plan     diff against the store's live items by (size, mtime), and by content hash when only
             the mtime changed: unchanged / to add / changed / touched / gone. Items under a folder
             that could not be listed are never taken for gone.
    train    only when the store has no models yet, or with --retrain (old checkpoints are not
             even loaded then): the training sample is read once through the reader and kept; the
             pair is trained (index/training.py), saved, and recorded in one transaction
    encode   the files to add, in shards of --batch-size files, each read and encoded by one task of
             an executor (index/executors.py: in this process, or worker processes); the kept
             training sample is only encoded. Results come back in shard order; each is one write
             transaction (its rows, and its files that could not be used with their reasons).
    commit   publish a new generation, only if something changed (a no-op run changes nothing)

Every file is read and decoded once per run. Killing the run at any moment leaves the previous
generation readable; batches already written are kept and published by the next run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hashae.decode import ImageDecodeError
from hashae.errors import CheckpointError, ConfigError, DataError, HashaeError
from hashae.events import Reporter, message, task
from hashae.folders import ImageFile, Listing, scan_folder
from hashae.index.backends import open_store
from hashae.index.backends.base import LiveItem, ModelPair, NewItem, StoreBackend, StoreError, WriteTransaction
from hashae.index.encoder import BatchEncoder, EncodedBatch, EncoderStage, ShardEncoder
from hashae.index.executors import Executor, make_executor, start_worker_server
from hashae.index.settings import DEFAULT_BITS, DEFAULT_IMAGE_SIZE, DEFAULT_LATENT_DIM, StoreSettings
from hashae.index.training import TrainingOptions, sample_positions, stack_pixels, train_pair, training_summaries
from hashae.reader import DEFAULT_MAX_FILE_SIZE, check_max_file_size, DecodedBatch, Shard, ShardReader, hash_file, make_shards, probe_channels, probe_files

ENCODE_BATCH = 1024  # files per shard: one read + encode task and one write transaction
# --executor auto uses worker processes from this many files to read: starting them costs ~0.6 s
# (a server process imports numpy, Pillow, numba), each file then saves ~30 us on 2 cores
AUTO_PROCESSES_MIN_FILES = 20_000


@dataclass(frozen=True)
class IndexOptions:
    """What `hashae index` was asked for. None means: keep the store's setting, or the default.

    executor: "auto", "sequential", "processes" or "ray" (index/executors.py); workers: processes to use
    (None: one per core); batch_size: files per shard (None: ENCODE_BATCH); max_file_size: larger
    files are recorded as skipped, unread; repoint: let this store index a folder other than the
    one it was built from (its items not found there are removed).
    """

    bits: int | None = None
    latent_dim: int | None = None
    image_size: int | None = None
    channels: int | None = None
    epochs: int | None = None
    quality: str = "fast"
    retrain: bool = False
    seed: int = 0
    device: str = "auto"
    executor: str = "auto"
    workers: int | None = None
    batch_size: int | None = None
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    repoint: bool = False
    nproc: int = 1  # training processes (torch DDP); encoding is the executor's
    address: str | None = None  # --executor ray: the cluster's address (None: a private local cluster)
    backend: str | None = None  # a new store's backend: "local" (default) or "milvus"
    backend_uri: str | None = None  # --backend milvus: a Milvus server URI or Lite file (None: in the store)


@dataclass
class IndexSummary:
    """What one run did, and how long each stage took."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    trained: bool = False
    generation: int = 0
    committed: bool = False
    executor: str = ""
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        trained = ", trained models" if self.trained else ""
        generation = f"generation {self.generation}" if self.committed else f"nothing changed, generation {self.generation}"
        return (
            f"indexed {self.indexed}, unchanged {self.unchanged}, removed {self.removed}, "
            f"skipped {self.skipped}{trained} in {self.seconds:.1f}s ({generation})"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """The diff between the folder and the live items."""

    unchanged: list[str] = field(default_factory=list)
    to_add: list[ImageFile] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # ids whose file changed (re-added)
    touched: list[tuple[int, int]] = field(default_factory=list)  # (id, new mtime_ns): same content
    gone: list[int] = field(default_factory=list)  # ids whose file is gone


def plan_changes(root: Path, listing: Listing, live: dict[str, LiveItem]) -> Plan:
    """Classify every listed file as unchanged or to (re-)add, and every live item whose file is gone
    or changed as to remove. A file whose size and mtime match its item is unchanged without reading
    it; when only the mtime differs, its content hash decides (read a chunk at a time), and a
    touched but identical file goes into `touched` so the next run need not read it again. Items
    under a folder that could not be listed are left alone."""
    plan = Plan()
    for image in listing.files:
        row = live.get(image.relpath)
        if row is not None and _same_file(root, image, row):
            plan.unchanged.append(image.relpath)
            if image.mtime_ns != row.mtime_ns:
                plan.touched.append((row.id, image.mtime_ns))
            continue
        if row is not None:
            plan.changed.append(row.id)
        plan.to_add.append(image)
    listed = {image.relpath for image in listing.files}
    plan.gone = [row.id for path, row in live.items() if path not in listed and listing.is_known(path)]
    return plan


def _same_file(root: Path, image: ImageFile, row: LiveItem) -> bool:
    if image.size != row.size:
        return False
    if image.mtime_ns == row.mtime_ns:
        return True
    try:
        return hash_file(root / image.relpath) == row.content_hash
    except (OSError, ImageDecodeError):
        return False


def index_folder(store_path: Path, root: Path, options: IndexOptions, *, report: Reporter | None = None) -> IndexSummary:
    """Bring the store up to date with the folder; returns the run's summary. Progress goes to report."""
    started = time.perf_counter()
    root = Path(root)
    check_max_file_size(options.max_file_size)
    summary = IndexSummary()
    timer = _StageTimer(summary)
    with timer("scan"):
        listing = scan_folder(root)
    if options.executor == "processes" or (options.executor == "auto" and len(listing.files) >= AUTO_PROCESSES_MIN_FILES):
        start_worker_server()  # its imports overlap the plan (and the training, if any)
    with open_store(store_path, create=True, backend=options.backend, backend_uri=options.backend_uri) as store, store.writer() as writer:
        _Run(store, writer, listing, options, report, summary, timer).run()
    if summary.trained and summary.committed:
        with timer("duplicates threshold"):
            _measure_duplicates_threshold(store_path, options, report)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _measure_duplicates_threshold(store_path: Path, options: IndexOptions, report: Reporter | None) -> None:
    """New models: measure the store's own duplicates threshold now (index/calibration.store_threshold,
    seconds), so that the first `hashae duplicates` only looks groups up. After the commit and out of
    the write lock: the items are safe whatever happens here, and a failure only leaves the
    measurement to the first duplicates call."""
    from hashae.index.calibration import store_threshold
    from hashae.index.query import QueryEngine

    try:
        with open_store(store_path, backend=options.backend, backend_uri=options.backend_uri) as store:
            chosen = store_threshold(QueryEngine.open(store), report=report)
    except (HashaeError, OSError) as error:
        message(report, f"the duplicates threshold was not measured ({error}); `hashae duplicates` will measure it")
        return
    limit = chosen.threshold
    message(report, f"duplicates threshold: Hamming <= {limit.radius}, latent <= {limit.latent_max:.4g} ({'measured on this store' if chosen.source == 'store' else chosen.note})")


@dataclass(frozen=True)
class _Look:
    """What a run found before changing anything."""

    live: dict[str, LiveItem]
    models: ModelPair | None
    training: bool
    asked: dict[str, int | None]
    stage: EncoderStage | None
    plan: Plan


class _Run:
    """One index run under the store's write lock."""

    def __init__(self, store: StoreBackend, writer: WriteTransaction, listing: Listing, options: IndexOptions,
                 report: Reporter | None, summary: IndexSummary, timer: _StageTimer) -> None:  # fmt: skip
        self.store, self.writer, self.listing, self.options = store, writer, listing, options
        self.report, self.summary, self.timer = report, summary, timer
        self.root = listing.root
        self.batch_size = options.batch_size or ENCODE_BATCH  # read now: tests change ENCODE_BATCH
        self.reader_settings = dict(max_file_size=options.max_file_size)
        self.skipped_before: set[str] = set()  # paths recorded as skipped when the run began

    def run(self) -> None:
        with self.timer("scan"):
            look = self._look()
        self.summary.unchanged = 0 if look.training else len(look.plan.unchanged)
        self.summary.removed = len(look.plan.gone)
        to_encode = self.listing.files if look.training else look.plan.to_add
        with self._executor(len(to_encode)) as executor:
            self.summary.executor = f"{executor.name} ({executor.workers} worker{'s' * (executor.workers > 1)})"
            if look.training:
                models, settings, kept, to_encode = self._train(executor, look.asked, to_encode, look.live)
            else:
                models, settings, kept = look.models, self._apply_plan(look), []
            with self.timer("encode"):
                self._encode(executor, kept, to_encode, self._model_dirs(models), settings)
        self._forget_skipped_files_gone()
        with self.timer("commit"):
            self._commit_if_changed(settings, models)
        self.summary.skipped = len(self.store.skipped())

    def _look(self) -> _Look:
        """What the store holds, what the run will do, and the plan; records the listing's skipped files."""
        store, options = self.store, self.options
        current = store.settings()
        _check_same_folder(store, current, self.root, repoint=options.repoint)
        live = self.writer.live_items()
        models = store.latest_models()
        training = options.retrain or models is None  # decided before any checkpoint is loaded
        asked = _asked_settings(current, options, training=training)
        stage = None if training else _load_stage(store, models)
        self.skipped_before = {item.path for item in store.skipped()}
        if self.listing.skipped:
            self.writer.record_skipped(_skip_entries(self.listing.skipped))
        return _Look(live, models, training, asked, stage, plan_changes(self.root, self.listing, live))

    def _apply_plan(self, look: _Look) -> StoreSettings:
        """Without training: the settings of the current models, and the plan's removals and mtimes."""
        settings = _settings_of(look.stage, _source_of(self.root, self.store.root)).with_changes(**self.store.backend_fields())
        self.writer.set_settings(settings)
        self.writer.remove_items(look.plan.changed + look.plan.gone)
        self.writer.update_mtimes(look.plan.touched)
        return settings

    def _model_dirs(self, models: ModelPair) -> tuple[str, str]:
        return str(self.store.model_dir(models.hashing)), str(self.store.model_dir(models.latent))

    # ------------------------------------------------------------------------------- training
    def _train(self, executor: Executor, asked: dict[str, int | None], files: list[ImageFile], live: dict[str, LiveItem]):
        """Read the training sample (kept for encoding), train and record the pair. Returns (the
        recorded pair, the settings, the sample's batches, the files still to read and encode)."""
        options = self.options
        image_size = asked["image_size"]
        with self.timer("decode for training"):
            positions = set(sample_positions(len(files), seed=options.seed).tolist())
            sample = [image for i, image in enumerate(files) if i in positions]
            kept, channels = self._read_sample(executor, sample, image_size, asked["channels"])
            decoded = sum(len(batch) for batch in kept)
            if decoded < 2:
                raise DataError(
                    f"{self.root}: fewer than 2 readable images ({len(sample) - decoded} could not be decoded); nothing to train on"
                )
        with self.timer("train"):
            x = stack_pixels([batch.pixels for batch in kept])
            trained = train_pair(
                x, bits=asked["bits"], latent_dim=asked["latent_dim"], models_dir=Path(self.store.models_dir).absolute(),
                options=TrainingOptions(epochs=options.epochs, quality=options.quality, seed=options.seed, device=options.device, nproc=options.nproc),
                report=self.report,
            )  # fmt: skip
            del x
        self.summary.trained = True
        self.summary.training = training_summaries(trained)
        settings = StoreSettings(bits=asked["bits"], latent_dim=asked["latent_dim"], image_size=image_size,
                                 channels=channels, **asdict(_source_of(self.root, self.store.root)),
                                 **self.store.backend_fields())  # fmt: skip
        # Crash safety: checkpoints first (unrecorded folders are harmless), then every live item
        # dropped, then the pair recorded: items are only ever encoded by the newest recorded pair.
        self.writer.remove_items(row.id for row in live.values())
        self.writer.set_settings(settings)
        models = self.writer.add_models(hashing=trained["hashing"].record(), latent=trained["latent"].record())
        return models, settings, kept, [image for i, image in enumerate(files) if i not in positions]

    def _read_sample(self, executor: Executor, sample: list[ImageFile], image_size: int, channels: int | None):
        """The sample's decoded batches, and the channels (probed from the sample when not known)."""
        kept: list[DecodedBatch] = []
        with task(self.report, "reading", total=len(sample)) as reading:
            if channels is None:
                probed = probe_files(sample)
                channels, probe = probe_channels(Shard(os.fspath(self.root), tuple(probed)), size=image_size, **self.reader_settings)
                kept.append(probe)
                reading.advance(len(probed))
                probed_paths = {image.relpath for image in probed}
                sample = [image for image in sample if image.relpath not in probed_paths]
            reader = ShardReader(size=image_size, channels=channels, **self.reader_settings)
            for batch in executor.map(reader, make_shards(self.root, sample, shard_size=self.batch_size)):
                kept.append(batch)
                reading.advance(len(batch) + len(batch.skipped))
        return kept, channels

    # ------------------------------------------------------------------------------- encoding
    def _encode(self, executor: Executor, kept: list[DecodedBatch], files: list[ImageFile], stage_dirs: tuple[str, str], settings: StoreSettings) -> None:
        total = sum(len(batch) + len(batch.skipped) for batch in kept) + len(files)
        reader = ShardReader(size=settings.image_size, channels=settings.channels, **self.reader_settings)
        with task(self.report, "encoding", total=total) as encoding:
            batches = executor.map(BatchEncoder(*stage_dirs), _drained(kept))
            shards = executor.map(ShardEncoder(reader, *stage_dirs), make_shards(self.root, files, shard_size=self.batch_size))
            for encoded in _chain(batches, shards):
                self._write(encoded)
                encoding.advance(len(encoded) + len(encoded.skipped))

    def _write(self, encoded: EncodedBatch) -> None:
        """One batch's rows in one transaction, then its files that could not be used."""
        rows = [NewItem(f.relpath, f.size, f.mtime_ns, f.content_hash, f.label) for f in encoded.files]
        if rows:
            self.writer.add_items(rows, encoded.codes, encoded.latents)
            fixed = [row.path for row in rows if row.path in self.skipped_before]
            if fixed:
                self.writer.clear_skipped(fixed)
        if encoded.skipped:
            self.writer.record_skipped(_skip_entries(encoded.skipped))
        self.summary.indexed += len(rows)

    # --------------------------------------------------------------------------------- ending
    def _forget_skipped_files_gone(self) -> None:
        """Forget skipped files that are no longer there (a folder that could not be listed keeps its own)."""
        present = {image.relpath for image in self.listing.files} | {item.relpath for item in self.listing.skipped}
        gone = [s.path for s in self.store.skipped() if s.path not in present and self.listing.is_known(s.path)]
        if gone:
            self.writer.clear_skipped(gone)

    def _commit_if_changed(self, settings: StoreSettings, models: ModelPair) -> None:
        """Commit a new generation unless this run changed nothing (then the store is left as it was)."""
        unchanged = None
        if not self.summary.trained and self.writer.pending() == (0, 0):
            unchanged = _committed_generation(self.store, settings, models)
        if unchanged is None:
            self.summary.generation = self.writer.commit(models=models)
            self.summary.committed = True
        else:
            self.summary.generation = unchanged

    @contextmanager
    def _executor(self, files: int) -> Iterator[Executor]:
        options = self.options
        executor = make_executor(options.executor, workers=options.workers, work=files, auto_threshold=AUTO_PROCESSES_MIN_FILES,
                                 address=options.address)  # fmt: skip
        with executor:
            yield executor


def _chain(*iterators: Iterable[EncodedBatch]) -> Iterator[EncodedBatch]:
    for iterator in iterators:
        yield from iterator


def _drained(batches: list[DecodedBatch]) -> Iterator[DecodedBatch]:
    """The batches in order, each let go of by the list once handed out (memory follows the work)."""
    batches.reverse()
    while batches:
        yield batches.pop()


def _skip_entries(skipped: Iterable) -> list[tuple[str, str, int | None, int | None]]:
    return [(item.relpath, item.reason, item.size, item.mtime_ns) for item in skipped]


def _asked_settings(current: StoreSettings | None, options: IndexOptions, *, training: bool) -> dict[str, int | None]:
    """The run's bits / latent size / image size / channels: the store's unless asked otherwise, which
    needs --retrain (codes of different models cannot share an index). channels None: detect it."""
    asked = {"bits": options.bits, "latent_dim": options.latent_dim, "image_size": options.image_size, "channels": options.channels}
    defaults = {"bits": DEFAULT_BITS, "latent_dim": DEFAULT_LATENT_DIM, "image_size": DEFAULT_IMAGE_SIZE, "channels": None}
    resolved: dict[str, int | None] = {}
    for key, value in asked.items():
        old = getattr(current, key) if current is not None else None
        if old is not None and value is not None and value != old and not training:
            flag = {"bits": "--bits", "latent_dim": "--latent", "image_size": "--image-size", "channels": "--color/--grayscale"}[key]
            raise ConfigError(f"this store was built with {key.replace('_', ' ')} {old}; pass --retrain to rebuild it with {flag} {value}")
        resolved[key] = value if value is not None else (old if old is not None else defaults[key])
    StoreSettings(**{key: value for key, value in resolved.items() if value is not None})  # validated here
    return resolved


def _load_stage(store: StoreBackend, models: ModelPair) -> EncoderStage:
    try:
        return EncoderStage.load(store.model_dir(models.hashing), store.model_dir(models.latent))
    except CheckpointError as error:
        advice = "" if "--retrain" in str(error) else "; run `hashae index FOLDER --retrain` to train new models"
        raise CheckpointError(f"{error}{advice}") from None


def _settings_of(stage: EncoderStage, source: _Source) -> StoreSettings:
    """The settings implied by the models themselves, so they can never disagree with the codes."""
    channels, image_size, _ = stage.input_shape
    return StoreSettings(bits=stage.bits, latent_dim=stage.latent_dim, image_size=image_size, channels=channels, **asdict(source))


def _check_same_folder(store: StoreBackend, current: StoreSettings | None, root: Path, *, repoint: bool) -> None:
    """A store belongs to its folder: another one is taken only with --repoint. The same folder is
    the same absolute path, or the same place relative to the store (the two moved or copied together)."""
    if repoint or current is None or current.source_root is None:
        return
    here = _source_of(root, store.root)
    if current.source_root == here.source_root or (current.source_from_store is not None and current.source_from_store == here.source_from_store):
        return
    raise ConfigError(
        f"the store {store.root} indexes {current.source_root}, not {here.source_root}: give this folder its own "
        f"store (--store DIR), or pass --repoint to make this store index it (items not found there are removed)"
    )


@dataclass(frozen=True)
class _Source:
    source_root: str
    source_from_store: str


def _source_of(root: Path, store_root: Path) -> _Source:
    """Where the indexed folder is: absolute, and relative to the store folder."""
    absolute = root.resolve()
    return _Source(str(absolute), Path(os.path.relpath(absolute, Path(store_root).resolve())).as_posix())


def _committed_generation(store: StoreBackend, settings: StoreSettings, models: ModelPair) -> int | None:
    """The newest committed generation if it already has these settings and models, else None."""
    try:
        view = store.snapshot()
    except StoreError:
        return None  # nothing committed yet
    return view.gen if view.settings == settings and view.models() == models else None


class _StageTimer:
    """`with timer("encode"):` adds the block's seconds to summary.stages["encode"]."""

    def __init__(self, summary: IndexSummary) -> None:
        self.summary = summary

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            stages = self.summary.stages
            stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - started, 3)

