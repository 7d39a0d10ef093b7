"""Self-describing checkpoint folders: config.json + weights.safetensors. Nothing is ever unpickled.

config.json holds the kind, the format version, the variant config (input shape, sizes), the
normalisation (as buffers in the weights), the encoder's layer specs for numpy inference, and free
`info` (training history, code statistics). Loading rebuilds the model through the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hashae.durable import fsync_file, fsync_folder
from hashae.errors import CheckpointError, ConfigError
from hashae.inference import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, check_tensor_values, read_config
from hashae.variants import Autoencoder, create, lookup


def save(model: Autoencoder, directory: Path, *, info: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint folder atomically (a temp folder renamed into place); returns it."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format_version": FORMAT_VERSION,
        "kind": model.config.kind,
        "config": model.config.to_dict(),
        "inference": model.inference_spec(),
        "info": info or {},
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2))
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            fsync_file(tmp / name)
        old = None
        if directory.exists():  # moved aside, not deleted, until the new folder is in place
            old = directory.parent / f".{directory.name}.old-{os.getpid()}"
            os.replace(directory, old)
        os.replace(tmp, directory)
        fsync_folder(directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load(directory: Path, *, device: str = "cpu") -> Autoencoder:
    """Rebuild a model from its folder; a missing, tampered or unknown-kind file raises CheckpointError.

    Every tensor is checked against the config (name, shape, float32, finite) before the model is
    built for real: the config's model is first laid out on torch's meta device (no memory), so a
    damaged config asks for nothing and a wrong weights file fails here with one line.
    """
    directory = Path(directory)
    document = read_config(directory)
    config = _config_of(document, directory / CONFIG_FILE)
    weights_path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path), device=device)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not a valid safetensors file ({error})") from None
    _check_state(state, _expected_tensors(config, directory / CONFIG_FILE), config.kind, where=weights_path)
    model = create(config)
    if "code_bank" in state:
        model.code_bank = torch.zeros_like(state["code_bank"])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path}: tensor shapes do not match the config ({str(error).splitlines()[-1].strip()})") from None
    model.eval()
    return model


def _config_of(document: dict[str, Any], config_path: Path):
    """The variant config a checkpoint's document describes; CheckpointError naming config_path."""
    try:
        config_class, _ = lookup(document["kind"])
        if not isinstance(document["config"], dict):
            raise ConfigError("the config field is not a JSON object")
        # a field the saved config lacks had, in effect, its WRITTEN_BEFORE value (not today's default)
        return config_class.from_dict({**config_class.WRITTEN_BEFORE, **document["config"]})
    except (ConfigError, TypeError, KeyError, ValueError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None


def _expected_tensors(config, config_path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor the config's model holds, laid out on the meta device."""
    try:
        with torch.device("meta"):
            skeleton = create(config)  # a config of the wrong types or shapes fails here, not at use
    except (ConfigError, TypeError, KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{config_path}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    return {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in skeleton.state_dict().items()}


FILLED_WHEN_MISSING = frozenset({"code_log_gain"})


def _check_state(state: dict[str, torch.Tensor], expected: dict, kind: str, *, where: Path) -> None:
    """The loaded tensors are exactly the model's: same names, shapes (code_bank: any number of
    rows of the right width), dtypes, and finite values."""
    # tensors newer than the checkpoint, which the model fills in when loading (an older hashing
    # model has no learned gain: gain 1)
    expected = {name: spec for name, spec in expected.items() if name in state or name not in FILLED_WHEN_MISSING}
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise CheckpointError(f"{where}: tensors do not match the {kind} model (missing {missing}, unexpected {extra})")
    for name, tensor in state.items():
        shape, dtype = expected[name]
        fits = tuple(tensor.shape) == shape or (name == "code_bank" and tensor.ndim == 2 and tensor.shape[1:] == shape[1:])
        if not fits:
            raise CheckpointError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, the config's model needs {shape}; the tensor shapes do not match the config")
        if tensor.dtype != dtype:
            raise CheckpointError(f"{where}: tensor {name} is {tensor.dtype}, hashae saves float32 (damaged or foreign weights)")
        check_tensor_values(name, tensor.detach().cpu().numpy(), where=where)
