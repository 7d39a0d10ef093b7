"""`hashae index FOLDER`: reader -> (trainer) -> encoder -> writer, incremental and crash-safe.

    plan     walk the folder (sorted relative paths), diff against the live catalogue rows by
             (size, mtime) and, when those changed, by content hash: unchanged / new / changed / gone
    train    only when the store has no models yet (or --retrain): the hashing AE and the VAE on
             the folder's images; checkpoints saved under store/models/, recorded in the catalogue
    encode   batches of new files: decode (bad files recorded with a reason), numpy encoder -> codes
             and latents, one catalogue transaction per batch
    commit   the store writes the new generation's index files and commits it last

Each stage is timed; the summary says what happened. Killing the run at any moment leaves the
previous generation readable; batches already in the catalogue are kept and published by the next run.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hashae.data import ImageFile, decode_image, detect_channels, list_images
from hashae.errors import ConfigError, DataError
from hashae.inference import InferenceEncoder
from hashae.progress import progress_bar
from hashae.index.backends.local.store import LiveItem, NewItem, Store, Writer

ENCODE_BATCH = 1024
MAX_TRAIN_ITEMS = 100_000  # training sample cap for very large folders; the rest is only encoded


@dataclass(frozen=True)
class IndexOptions:
    """What `hashae index` was asked for. None means: keep the store's setting, or the default."""

    bits: int | None = None
    latent_dim: int | None = None
    image_size: int | None = None
    channels: int | None = None
    epochs: int | None = None
    quality: str = "fast"
    retrain: bool = False
    seed: int = 0
    device: str = "auto"
    show_progress: bool = True


DEFAULTS = {"bits": 32, "latent_dim": 32, "image_size": 28}


@dataclass
class IndexSummary:
    """What one run did, and how long each stage took."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    trained: bool = False
    generation: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        trained = ", trained models" if self.trained else ""
        return (
            f"indexed {self.indexed}, unchanged {self.unchanged}, removed {self.removed}, "
            f"skipped {self.skipped}{trained} in {self.seconds:.1f}s (generation {self.generation})"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """The diff between the folder and the live catalogue rows."""

    unchanged: list[str] = field(default_factory=list)
    to_add: list[tuple[ImageFile, os.stat_result]] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # rows whose file changed (re-added)
    touched: list[tuple[int, int]] = field(default_factory=list)  # (id, new mtime_ns): same content
    gone: list[int] = field(default_factory=list)  # rows whose file is gone


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def plan_changes(root: Path, files: list[ImageFile], live: dict[str, LiveItem]) -> Plan:
    """Classify every file as unchanged or to (re-)add, and every live row whose file is gone or
    changed as to remove. A file whose size and mtime match its row is unchanged without reading
    it; otherwise its content hash decides (a touched but identical file stays unchanged, and its
    new mtime goes into `touched` so the next run need not read it again)."""
    plan = Plan()
    seen = set()
    for image in files:
        seen.add(image.relpath)
        try:
            stat = os.stat(root / image.relpath)
        except OSError:
            continue  # vanished between listing and stat: it is simply not in the folder
        row = live.get(image.relpath)
        if row is not None and _same_file(root / image.relpath, stat, row):
            plan.unchanged.append(image.relpath)
            if stat.st_mtime_ns != row.mtime_ns:
                plan.touched.append((row.id, stat.st_mtime_ns))
            continue
        if row is not None:
            plan.changed.append(row.id)
        plan.to_add.append((image, stat))
    plan.gone = [row.id for path, row in live.items() if path not in seen]
    return plan


def _same_file(path: Path, stat: os.stat_result, row: LiveItem) -> bool:
    if stat.st_size != row.size:
        return False
    if stat.st_mtime_ns == row.mtime_ns:
        return True
    try:
        return content_hash(path.read_bytes()) == row.content_hash
    except OSError:
        return False


def resolve_settings(current: dict[str, Any] | None, options: IndexOptions, root: Path, files: list[ImageFile]) -> dict[str, Any]:
    """The run's bits / latent size / image size / channels: those of the current models, unless
    asked otherwise (which needs --retrain: codes of different models cannot share an index)."""
    asked = {"bits": options.bits, "latent_dim": options.latent_dim, "image_size": options.image_size, "channels": options.channels}
    current = current or {}
    settings: dict[str, Any] = {}
    for key, value in asked.items():
        old = current.get(key)
        if old is not None and value is not None and value != old and not options.retrain:
            raise ConfigError(f"this store was built with {key.replace('_', ' ')} {old}; pass --retrain to rebuild it with {value}")
        settings[key] = value if value is not None and (options.retrain or old is None) else old
        if settings[key] is None:
            settings[key] = DEFAULTS.get(key)
    if settings["bits"] % 8 or settings["bits"] <= 0:
        raise ConfigError(f"--bits must be a positive multiple of 8, got {settings['bits']}")
    if settings["channels"] is None:
        settings["channels"] = detect_channels(root, files)
    return settings


@dataclass(frozen=True)
class StoreModels:
    """The hashing and latent models new rows are encoded with, as catalogue ids and numpy encoders."""

    hashing_id: int
    latent_id: int
    hashing: InferenceEncoder
    latent: InferenceEncoder

    def settings(self) -> dict[str, Any]:
        """Settings implied by the models themselves, so they can never disagree with the codes."""
        channels, image_size = self.hashing.input_shape[0], self.hashing.input_shape[-1]
        return {"bits": self.hashing.code_size, "latent_dim": self.latent.code_size, "image_size": image_size, "channels": channels}


def current_models(store: Store) -> StoreModels | None:
    """The newest recorded pair of models (None when there is none or they do not fit together)."""
    hashing, latent = (store.catalogue.latest_model(role) for role in ("hashing", "latent"))
    if hashing is None or latent is None:
        return None
    pair = StoreModels(hashing.id, latent.id, InferenceEncoder.load(store.model_dir(hashing)), InferenceEncoder.load(store.model_dir(latent)))
    return pair if pair.hashing.input_shape == pair.latent.input_shape else None


def index_folder(store_path: Path, root: Path, options: IndexOptions) -> IndexSummary:
    """Bring the store up to date with the folder; returns the run's summary."""
    started = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    summary = IndexSummary()
    timer = _StageTimer(summary)
    with Store.open(store_path, create=True) as store, store.writer() as writer:
        with timer("scan"):
            files = list_images(root)
            models = current_models(store)
            settings = resolve_settings(models.settings() if models else None, options, root, files)
            live = writer.live_items()
        if models is None or options.retrain:
            models = _train_models(store, writer, root, files, settings, options, summary, timer)
            live = {}  # _train_models dropped every live row: all files are encoded anew
        writer.set_settings(**models.settings(), source_root=str(root.resolve()))
        plan = plan_changes(root, files, live)
        with timer("encode"):
            writer.remove_items(plan.changed + plan.gone)
            writer.update_mtimes(plan.touched)
            _encode_and_store(root, plan.to_add, models, writer, summary, options.show_progress)
            listed = {f.relpath for f in files}
            writer.clear_skipped(s.path for s in store.catalogue.skipped() if s.path not in listed)  # deleted bad files
        with timer("commit"):
            summary.generation = writer.commit(hashing_model=models.hashing_id, latent_model=models.latent_id)
        summary.unchanged, summary.removed = len(plan.unchanged), len(plan.gone)
        summary.skipped = len(store.catalogue.skipped())
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


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


def _read_and_decode(root: Path, image: ImageFile, settings: dict[str, Any]) -> tuple[bytes, np.ndarray]:
    data = (root / image.relpath).read_bytes()
    return data, decode_image(data, size=settings["image_size"], channels=settings["channels"])


def _encode_and_store(root: Path, to_add, models: StoreModels, writer: Writer, summary: IndexSummary, show_progress: bool) -> None:
    """Decode, encode and add the files in batches: one catalogue transaction per batch."""
    settings = models.settings()
    with progress_bar("encoding", total=len(to_add), enabled=show_progress and bool(to_add)) as bar:
        for start in range(0, len(to_add), ENCODE_BATCH):
            rows, pixels, skipped = [], [], []
            for image, stat in to_add[start : start + ENCODE_BATCH]:
                try:
                    data, array = _read_and_decode(root, image, settings)
                except (DataError, OSError) as error:
                    skipped.append((image.relpath, _reason(error), stat.st_size, stat.st_mtime_ns))
                    continue
                rows.append(NewItem(image.relpath, stat.st_size, stat.st_mtime_ns, content_hash(data), image.label))
                pixels.append(array)
            if rows:
                batch = np.stack(pixels)  # (m, C, H, W)
                codes, _ = models.hashing.encode(batch)
                writer.add_items(rows, codes, models.latent.embed(batch))
                writer.clear_skipped([row.path for row in rows])
            if skipped:
                writer.record_skipped(skipped)
            summary.indexed += len(rows)
            bar.advance(n=len(rows) + len(skipped))


def _reason(error: Exception) -> str:
    if isinstance(error, OSError):
        return f"cannot read the file ({error.strerror or error})"
    return getattr(error, "reason", None) or str(error)  # ImageDecodeError carries the bare reason


def _train_models(store: Store, writer: Writer, root: Path, files, settings, options: IndexOptions, summary: IndexSummary, timer) -> StoreModels:
    """Train the hashing AE and the VAE on (a sample of) the folder; save and record them.

    Order matters for crash safety: checkpoints are written first (unrecorded folders are harmless),
    then every live row is dropped, then the models are recorded; so rows are only ever encoded by
    the newest recorded models."""
    from hashae import checkpoint
    from hashae.recipes import train_store_models

    with timer("decode for training"):
        x = _decode_training_sample(root, files, settings, options)
    with timer("train"):
        trained = train_store_models(
            x,
            bits=settings["bits"],
            latent_dim=settings["latent_dim"],
            epochs=options.epochs,
            quality=options.quality,
            seed=options.seed,
            device=options.device,
            show_progress=options.show_progress,
        )
    summary.trained = True
    summary.training = {role: fit.summary() for role, fit in trained.items()}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folders = {role: checkpoint.save(fit.model, store.models_dir / f"{role}-{stamp}-{os.getpid()}", info=summary.training[role]) for role, fit in trained.items()}
    writer.remove_items(row.id for row in writer.live_items().values())
    ids = {role: writer.add_model(role=role, dir=folders[role].relative_to(store.root), kind=fit.model.config.kind, info=summary.training[role]) for role, fit in trained.items()}
    return StoreModels(ids["hashing"], ids["latent"], InferenceEncoder.load(folders["hashing"]), InferenceEncoder.load(folders["latent"]))


def _decode_training_sample(root: Path, files: list[ImageFile], settings: dict[str, Any], options: IndexOptions) -> np.ndarray:
    sample = files
    if len(files) > MAX_TRAIN_ITEMS:
        pick = np.random.default_rng(options.seed).choice(len(files), MAX_TRAIN_ITEMS, replace=False)
        sample = [files[i] for i in sorted(pick)]
    pixels, bad = [], 0
    with progress_bar("decoding", total=len(sample), enabled=options.show_progress) as bar:
        for image in sample:
            try:
                pixels.append(_read_and_decode(root, image, settings)[1])
            except (DataError, OSError):
                bad += 1  # recorded with its reason by the encode stage
            bar.advance()
    if len(pixels) < 2:
        raise DataError(f"{root}: fewer than 2 readable images ({bad} could not be decoded); nothing to train on")
    return np.stack(pixels)
