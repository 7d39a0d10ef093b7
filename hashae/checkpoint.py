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
from hashae.inference import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, read_config
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
    """Rebuild a model from its folder; a missing, tampered or unknown-kind file raises CheckpointError."""
    directory = Path(directory)
    document = read_config(directory)
    try:
        config_class, _ = lookup(document["kind"])
        if not isinstance(document["config"], dict):
            raise ConfigError("the config field is not a JSON object")
        config = config_class.from_dict(document["config"])
        model = create(config)  # a config of the wrong types or shapes fails here, not at use
    except (ConfigError, TypeError, KeyError, ValueError) as error:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {error}") from None
    weights_path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path), device=device)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not a valid safetensors file ({error})") from None
    expected = set(model.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(f"{weights_path}: tensors do not match the {config.kind} model (missing {missing}, unexpected {extra})")
    if "code_bank" in state:
        model.code_bank = torch.zeros_like(state["code_bank"])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path}: tensor shapes do not match the config ({str(error).splitlines()[-1].strip()})") from None
    model.eval()
    return model
