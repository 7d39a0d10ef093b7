"""Checkpoint folders: a faithful round trip, and every kind of bad folder refused with one clear line.

Both loaders are held to it: hashae.checkpoint.load (torch, through the registry) and
hashae.inference.InferenceEncoder.load (numpy, the query path). Nothing in a checkpoint is ever
executed: the pickle payloads below would create a marker file if anything unpickled them.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hashae import checkpoint, variants
from hashae.errors import CheckpointError
from hashae.inference import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, InferenceEncoder

INPUT_DIM = 20


class _Trap:
    """Unpickling this creates `marker`: proof that a loader executed the file's contents."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def vectors() -> np.ndarray:
    return np.random.default_rng(0).normal(2.0, 3.0, (64, INPUT_DIM)).astype(np.float32)


@pytest.fixture
def saved(tmp_path: Path, build_model, vectors: np.ndarray) -> Path:
    """A small hashing checkpoint on vectors with fitted normalisation and calibration."""
    model = build_model("hashing", input_shape=(INPUT_DIM,), code_size=8, hidden=(16,), recon_loss="mse")
    model.fit_normalisation(vectors)
    model.eval()
    model.calibrate(torch.from_numpy(vectors))
    return checkpoint.save(model, tmp_path / "model", info={"note": "test"})


def _edit_config(folder: Path, edit: Callable[[dict], None]) -> None:
    document = json.loads((folder / CONFIG_FILE).read_text())
    edit(document)
    (folder / CONFIG_FILE).write_text(json.dumps(document))


def _edit_weights(folder: Path, edit: Callable[[dict], None]) -> None:
    state = load_file(str(folder / WEIGHTS_FILE))
    edit(state)
    save_file(state, str(folder / WEIGHTS_FILE))


# ----------------------------------------------------------------------------------------------
# the good path (the contract test in test_variants.py round-trips every variant)


def test_save_writes_a_self_describing_folder(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")], "temp folder left behind"
    document = json.loads((saved / CONFIG_FILE).read_text())
    assert document["format_version"] == FORMAT_VERSION
    assert document["kind"] == "hashing"
    assert document["config"]["input_shape"] == [INPUT_DIM]
    assert document["info"] == {"note": "test"}
    assert InferenceEncoder.load(saved).info == {"note": "test"}


def test_save_replaces_an_existing_checkpoint(saved: Path, build_model) -> None:
    other = build_model("vae", seed=1, input_shape=(INPUT_DIM,), code_size=4, hidden=(8,), recon_loss="mse")
    checkpoint.save(other, saved)
    loaded = checkpoint.load(saved)
    assert isinstance(loaded, variants.VariationalAutoencoder)
    assert loaded.config == other.config
    for name, tensor in other.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_loaded_model_is_in_eval_mode_and_keeps_buffers(saved: Path, vectors: np.ndarray) -> None:
    model = checkpoint.load(saved)
    assert not model.training
    stored = load_file(str(saved / WEIGHTS_FILE))
    assert torch.equal(model.input_mean, stored["input_mean"])
    assert torch.allclose(model.input_mean, torch.from_numpy(vectors.mean(0)), atol=1e-5)
    assert model.code_bank.shape == (64, 8)


# ----------------------------------------------------------------------------------------------
# bad folders


def _pickle_payload(folder: Path, marker: Path) -> None:
    (folder / WEIGHTS_FILE).write_bytes(pickle.dumps({"encoder.0.weight": _Trap(marker)}))


def _torch_save_payload(folder: Path, marker: Path) -> None:
    torch.save({"encoder.0.weight": _Trap(marker)}, folder / WEIGHTS_FILE)  # a zip holding a pickle


def _truncated_weights(folder: Path, marker: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _truncated_header(folder: Path, marker: Path) -> None:
    (folder / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes()[:12])


def _missing_weights(folder: Path, marker: Path) -> None:
    (folder / WEIGHTS_FILE).unlink()


def _missing_encoder_tensor(folder: Path, marker: Path) -> None:
    _edit_weights(folder, lambda state: state.pop("encoder.0.weight"))


def _missing_config(folder: Path, marker: Path) -> None:
    (folder / CONFIG_FILE).unlink()


def _invalid_json(folder: Path, marker: Path) -> None:
    (folder / CONFIG_FILE).write_text('{"format_version": 1, "kind": ')


def _not_a_config_object(folder: Path, marker: Path) -> None:
    (folder / CONFIG_FILE).write_text("[1, 2, 3]")


def _wrong_format_version(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc.update(format_version=FORMAT_VERSION + 98))


def _unknown_kind(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc.update(kind="mystery"))


def _unknown_config_field(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc["config"].update(colour="blue"))


def _config_not_an_object(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc.update(config=[1]))


def _config_of_wrong_type(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc["config"].update(input_shape="abc"))


def _shapes_disagree_with_config(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc["config"].update(code_size=16))


def _unknown_activation(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc["inference"].update(embedding_activation="tanh"))


def _unknown_encoder_op(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc["inference"]["encoder"].append({"op": "eval", "code": "print(1)"}))


def _wrong_tensor_shape(folder: Path, marker: Path) -> None:
    """A layer of another width: loads as safetensors, used to crash the first query in a matmul."""
    def edit(state: dict) -> None:
        state["encoder.0.weight"] = torch.ones(17, INPUT_DIM)
        state["encoder.0.bias"] = torch.ones(17)
    _edit_weights(folder, edit)


def _int8_weights(folder: Path, marker: Path) -> None:
    _edit_weights(folder, lambda state: state.update({"encoder.0.weight": state["encoder.0.weight"].to(torch.int8)}))


def _nan_weights(folder: Path, marker: Path) -> None:
    def edit(state: dict) -> None:
        state["encoder.0.weight"][0, 0] = float("nan")
    _edit_weights(folder, edit)


def _infinite_threshold(folder: Path, marker: Path) -> None:
    def edit(state: dict) -> None:
        state["bit_threshold"][0] = float("inf")
    _edit_weights(folder, edit)


def _huge_input_shape(folder: Path, marker: Path) -> None:
    """Read as is, this config asks for a 40 TB first layer."""
    _edit_config(folder, lambda doc: doc["config"].update(input_shape=[3, 100_000, 100_000]))


def _four_dimensional_input(folder: Path, marker: Path) -> None:
    _edit_config(folder, lambda doc: doc["config"].update(input_shape=[1, 1, 4, 5]))


BOTH = ("torch", "numpy")
# name -> (tamper, file the message must name, loaders that must refuse it, extra words in the message)
BAD_FOLDERS = {
    "pickle payload": (_pickle_payload, WEIGHTS_FILE, BOTH, ["safetensors"]),
    "torch.save payload": (_torch_save_payload, WEIGHTS_FILE, BOTH, ["safetensors"]),
    "truncated weights": (_truncated_weights, WEIGHTS_FILE, BOTH, ["safetensors"]),
    "truncated header": (_truncated_header, WEIGHTS_FILE, BOTH, ["safetensors"]),
    "missing weights": (_missing_weights, WEIGHTS_FILE, BOTH, []),
    "missing encoder tensor": (_missing_encoder_tensor, WEIGHTS_FILE, BOTH, ["encoder.0.weight"]),
    "missing config": (_missing_config, CONFIG_FILE, BOTH, ["missing"]),
    "invalid json": (_invalid_json, CONFIG_FILE, BOTH, ["JSON"]),
    "not a config object": (_not_a_config_object, CONFIG_FILE, BOTH, []),
    "wrong format version": (_wrong_format_version, CONFIG_FILE, BOTH, [str(FORMAT_VERSION + 98)]),
    # The numpy encoder runs the self-describing inference spec and does not dispatch on the kind
    # (it cannot import the torch registry), so only the torch loader refuses unknown kinds.
    "unknown kind": (_unknown_kind, CONFIG_FILE, ("torch",), ["mystery", *variants.known_kinds()]),
    "unknown config field": (_unknown_config_field, CONFIG_FILE, ("torch",), ["colour"]),
    "config not an object": (_config_not_an_object, CONFIG_FILE, BOTH, []),
    "config of wrong type": (_config_of_wrong_type, CONFIG_FILE, ("torch",), []),
    "shapes disagree with config": (_shapes_disagree_with_config, WEIGHTS_FILE, ("torch",), ["shape"]),
    "wrong tensor shape": (_wrong_tensor_shape, WEIGHTS_FILE, BOTH, ["encoder.", "shape"]),
    "int8 weights": (_int8_weights, WEIGHTS_FILE, BOTH, ["encoder.0.weight", "int8", "float32"]),
    "NaN weights": (_nan_weights, WEIGHTS_FILE, BOTH, ["encoder.0.weight", "NaN"]),
    "infinite threshold": (_infinite_threshold, WEIGHTS_FILE, BOTH, ["bit_threshold"]),
    "huge input shape": (_huge_input_shape, CONFIG_FILE, BOTH, ["input_shape", "30,000,000,000"]),
    "four-dimensional input": (_four_dimensional_input, CONFIG_FILE, BOTH, ["input_shape"]),
    "unknown activation": (_unknown_activation, CONFIG_FILE, ("numpy",), ["tanh"]),
    "unknown encoder op": (_unknown_encoder_op, CONFIG_FILE, ("numpy",), ["eval"]),
}
LOADERS = {"torch": checkpoint.load, "numpy": InferenceEncoder.load}
CASES = [
    pytest.param(name, loader, id=f"{name}-{loader}")
    for name, (_, _, loaders, _) in BAD_FOLDERS.items()
    for loader in loaders
]


@pytest.mark.parametrize(("case", "loader"), CASES)
def test_bad_folder_is_refused_with_one_clear_line(case: str, loader: str, saved: Path, tmp_path: Path) -> None:
    tamper, bad_file, _, words = BAD_FOLDERS[case]
    marker = tmp_path / "payload-was-executed"
    tamper(saved, marker)
    with pytest.raises(CheckpointError) as caught:
        LOADERS[loader](saved)
    message = str(caught.value)
    assert "\n" not in message, message
    assert str(saved / bad_file) in message, message
    for word in words:
        assert word in message, message
    assert not marker.exists(), "the loader executed the checkpoint's contents"


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_missing_folder_is_refused(loader, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint folder") as caught:
        loader(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_the_payloads_are_armed(tmp_path: Path) -> None:
    """Control for the test above: these payloads do fire when unpickled, so their silence there
    means nothing was unpickled, not that the trap was a dud."""
    marker = tmp_path / "fired"
    _pickle_payload(tmp_path, marker)
    pickle.loads((tmp_path / WEIGHTS_FILE).read_bytes())
    assert marker.exists()
    marker.unlink()
    _torch_save_payload(tmp_path, marker)
    renamed = tmp_path / "payload.pt"  # torch.load would treat a .safetensors name as safetensors
    renamed.write_bytes((tmp_path / WEIGHTS_FILE).read_bytes())
    torch.load(renamed, weights_only=False)  # the unsafe call hashae never makes
    assert marker.exists()


# ----------------------------------------------------------------------------------------------
# tensors checked at load, digests


def test_a_wrong_shape_fails_at_load_not_at_the_first_query(saved: Path) -> None:
    """The numpy encoder checks shapes through the whole chain at load: a weights file whose first
    layer is narrower than the second layer expects is refused before any query."""
    def edit(state: dict) -> None:
        state["encoder.0.weight"] = state["encoder.0.weight"][:8].clone()
        state["encoder.0.bias"] = state["encoder.0.bias"][:8].clone()
    _edit_weights(saved, edit)
    for loader in LOADERS.values():
        with pytest.raises(CheckpointError, match="shape") as caught:
            loader(saved)
        assert "\n" not in str(caught.value) and str(saved / WEIGHTS_FILE) in str(caught.value)


def test_a_huge_input_shape_is_refused_before_any_allocation(saved: Path) -> None:
    """`hashae generate` on a config asking for a 40 TB layer: one line, at once, in a process
    that may not even map 4 GiB (so no allocation of that size was tried)."""
    import subprocess
    import sys

    _huge_input_shape(saved, saved)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from hashae.cli.main import main\n"
        f"sys.argv = ['hashae', 'generate', '--model', {str(saved)!r}, '--out', {str(saved.parent / 'g.png')!r}]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "input_shape" in lines[0] and str(saved / CONFIG_FILE) in lines[0], done.stderr


def test_digests_name_the_changed_file(saved: Path) -> None:
    from hashae.inference import checkpoint_digests, verify_checkpoint_digests

    recorded = checkpoint_digests(saved)
    assert sorted(recorded) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    verify_checkpoint_digests(saved, recorded, fix="retrain")  # unchanged: nothing raised
    data = bytearray((saved / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in a tensor: still a valid safetensors file
    (saved / WEIGHTS_FILE).write_bytes(bytes(data))
    InferenceEncoder.load(saved)  # loads: only the digest can tell
    with pytest.raises(CheckpointError, match="changed since the store recorded it") as caught:
        verify_checkpoint_digests(saved, recorded, fix="run `hashae index FOLDER --retrain`")
    assert str(saved / WEIGHTS_FILE) in str(caught.value) and "--retrain" in str(caught.value)


def test_a_hashing_checkpoint_from_before_the_learned_gain_still_loads(saved: Path, vectors: np.ndarray) -> None:
    """Stores trained before the per-unit gain existed keep working in inspect/generate (gain 1)."""
    before = checkpoint.load(saved)
    _edit_weights(saved, lambda state: state.pop("code_log_gain"))
    _edit_config(saved, lambda document: [document["config"].pop(k, None) for k in ("code_gain", "gain_speed")])
    old = checkpoint.load(saved)
    assert torch.equal(old.code_log_gain.detach(), torch.zeros_like(old.code_log_gain))
    x = torch.from_numpy(vectors[:16])
    if not before.config.code_gain or torch.equal(before.code_log_gain.detach(), torch.zeros_like(before.code_log_gain)):
        assert torch.equal(before.bits(x), old.bits(x))


# ----------------------------------------------------------------------------------------------
# per-image standardisation (issue 13): the numpy encoder does what the torch model does


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("view", ["standardise_images", "centre_images", "scale_images"])
def test_the_numpy_encoder_sees_each_image_as_the_torch_model_does(tmp_path: Path, build_model, arch: str, view: str) -> None:
    """Per-image standardisation, centring and zoom: hashae.inference and the torch model agree."""
    rng = np.random.default_rng(0)
    images = np.zeros((16, 1, 8, 8), np.float32)
    images[:, :, 1:6, 2:7] = rng.uniform(0, 1, (16, 1, 5, 5)) * np.linspace(0.2, 1, 16, dtype=np.float32)[:, None, None, None]
    images[0] = 0.0  # a blank image: left as zeros by both
    shape = {"hidden": (4, 8), "dense": 16} if arch == "conv" else {"hidden": (16,)}
    latents = {}
    for on in (True, False):
        views = {"standardise_images": False, "centre_images": view == "scale_images", "scale_images": False, view: on}
        model = build_model("vae", input_shape=(1, 8, 8), code_size=4, arch=arch, augmentation={}, **shape, **views)
        model.fit_normalisation(images)
        model.eval()
        folder = checkpoint.save(model, tmp_path / f"{arch}-{view}-{on}")
        numpy_latents = InferenceEncoder.load(folder).embed(images)
        torch_latents = checkpoint.load(folder).embed(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(numpy_latents, torch_latents, atol=2e-5)
        latents[on] = numpy_latents
    assert not np.allclose(latents[True], latents[False], atol=1e-3), f"{view} changed nothing"


def test_a_vae_checkpoint_from_before_standardisation_loads_as_it_was_trained(tmp_path: Path, build_model) -> None:
    """A checkpoint whose config lacks the issue-13 fields was trained without them, whatever
    today's defaults are: both loaders must encode as before."""
    images = np.random.default_rng(1).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    model = build_model("vae", input_shape=(1, 8, 8), code_size=4, hidden=(16,), standardise_images=False, centre_images=False, augmentation={})
    model.eval()
    folder = checkpoint.save(model, tmp_path / "old-vae")
    issue_13_fields = ("standardise_images", "centre_images", "scale_images", "augmentation", "invariance", "contrast", "contrast_temperature")
    _edit_config(folder, lambda document: [document["config"].pop(k) for k in issue_13_fields])
    loaded = checkpoint.load(folder)
    assert loaded.config.standardise_images is False and loaded.config.centre_images is False and not loaded.config.augmentation.active
    assert loaded.config.scale_images is False
    assert loaded.config.contrast == 0
    expected = model.embed(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(loaded.embed(torch.from_numpy(images)).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(InferenceEncoder.load(folder).embed(images), expected, atol=2e-5)
