"""One contract for every registered variant, the registry, and the one trainer.

The contract test is parametrised over variants.known_kinds() (so a newly registered kind is held to
it automatically) and over the conv architecture where it makes sense. What is special in each
variant (PCA, KL, Jacobian, saturation, sparsity, denoising) is checked in test_seed_claims.py.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from hashae import checkpoint, trainer, variants
from hashae.codes import pack_bits
from hashae.errors import ConfigError, HashaeError, TrainingError
from hashae.inference import InferenceEncoder
from hashae.trainer import TrainConfig

CODE_SIZE = 16
CPU = torch.device("cpu")
# The conv body where it makes sense: a linear autoencoder has no conv form (a conv body is not
# linear), and the contractive penalty's autograd Jacobian of a conv encoder is too slow for the
# default run (that path is checked against torch.autograd in test_seed_claims.py).
CONV_EXCLUDED = {"linear", "contractive"}
# Recipes held to the contract besides each kind's defaults: the seed's plain semantic hashing (noise
# ramped before the sigmoid), reachable with README's `--set` flags.
SEED_HASHING = {"noise_max": 4.0, "hard_phase": 0.0, "code_norm": False, "consistency": 0.0}
RECIPES = {kind: (kind, {}) for kind in variants.known_kinds()} | {"hashing-seed": ("hashing", SEED_HASHING)}
CASES = [(name, "mlp") for name in RECIPES] + [(name, "conv") for name, (kind, _) in RECIPES.items() if kind not in CONV_EXCLUDED]


def small_model(build_model, case: tuple[str, str]) -> variants.Autoencoder:
    """The case's model: small nets on 28x28 images. Linear and contractive keep their default
    hidden=() for the MLP (the contractive closed form)."""
    name, arch = case
    kind, recipe = RECIPES[name]
    fields = {"code_size": CODE_SIZE, "arch": arch, **recipe}
    if arch == "conv":
        fields.update(hidden=(4, 8), dense=32)
    elif kind not in ("linear", "contractive"):
        fields.update(hidden=(32,))
    return build_model(kind, **fields)


@dataclass
class Trained:
    model: variants.Autoencoder
    loss_before: float
    loss_after: float
    history: trainer.History
    held_out: np.ndarray


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}-{a}" for k, a in CASES])
def case(request) -> tuple[str, str]:
    return request.param


@pytest.fixture(scope="module")
def trained(case, fashion, build_model, fit_model) -> Trained:
    """The case's model trained briefly (16 steps on 256 images), then calibrated, as recipes.fit
    hands it over; shared below. (Calibration moves the held-out loss of a code_norm hashing model
    only: its bit thresholds centre the code units, which running statistics do only slowly.)"""
    train_x, held_out = fashion[0][:256], fashion[1][:128]
    model = small_model(build_model, case)
    model.fit_normalisation(train_x)
    before = trainer.evaluate(model, torch.from_numpy(held_out), device=CPU)
    history = fit_model(model, train_x, epochs=2, batch_size=32, lr=1e-2)
    model.calibrate(torch.from_numpy(train_x))
    after = trainer.evaluate(model, torch.from_numpy(held_out), device=CPU)
    return Trained(model, before, after, history, held_out)


# ----------------------------------------------------------------------------------------------
# the contract


def test_forward_contract(case, fashion, build_model) -> None:
    model = small_model(build_model, case)
    model.fit_normalisation(fashion[0])
    x = torch.from_numpy(fashion[0][:8])
    for training in (True, False):
        model.train(training)
        out = model(x, progress=0.5)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert "reconstruction" in out.terms
        assert all(isinstance(name, str) and term.ndim == 0 for name, term in out.terms.items())
        assert torch.allclose(out.loss, sum(out.terms.values()))
        assert out.code.shape == (8, CODE_SIZE)
        assert out.reconstruction.shape == x.shape
    assert model.embed(x).shape == (8, CODE_SIZE)
    assert model.bits(x).shape == (8, CODE_SIZE) and model.bits(x).dtype == torch.bool
    assert model.decode(model.embed(x)).shape == x.shape


def test_one_optimiser_step_changes_every_parameter(case, fashion, build_model) -> None:
    model = small_model(build_model, case)
    model.fit_normalisation(fashion[0])
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    model(torch.from_numpy(fashion[0][:64]), progress=0.5).loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert not torch.equal(param.detach(), before[name]), f"{name} did not move"
    # fitted statistics are not trained; a code_norm hashing model's running centre of each code
    # unit (bit_threshold, as BatchNorm's running mean) follows the training batches
    running = {"bit_threshold"} if getattr(model.config, "code_norm", False) else set()
    for name, buffer in model.state_dict().items():
        if name not in dict(model.named_parameters()):
            assert torch.equal(buffer, before[name]) != (name in running), name


def test_hashing_held_out_loss_standardises_like_training(build_model) -> None:
    """A held-out pass during training (before calibration) sees codes centred and scaled by the
    running statistics, so its balance term is as small as training's, not an artefact of raw z."""
    rng = np.random.default_rng(0)
    x = (rng.random((512, 1, 8, 8)) < 0.3).astype(np.float32)
    model = build_model("hashing", input_shape=(1, 8, 8), code_size=16, hidden=(32,), code_norm=True, hard_phase=1.0)
    with torch.no_grad():  # a far-off encoder bias, as training can drift to: raw z is nowhere near 0
        model.encoder[-1].bias.add_(5.0)
    model.train()
    for _ in range(50):  # forward passes only: the running statistics settle
        model(torch.from_numpy(x[:256]))
    model.eval()
    with torch.no_grad():
        held_out = model(torch.from_numpy(x[256:])).terms["balance"].item()
    assert held_out < 0.05 * model.config.balance


def test_loss_falls_over_a_short_run(trained: Trained) -> None:
    assert trained.loss_after < 0.99 * trained.loss_before, (trained.loss_before, trained.loss_after)
    assert len(trained.history.epochs) == 2
    assert not trained.model.training


def test_checkpoint_round_trip_gives_identical_outputs(trained: Trained, tmp_path: Path) -> None:
    model, x = trained.model, torch.from_numpy(trained.held_out)
    loaded = checkpoint.load(checkpoint.save(model, tmp_path / "ckpt"))
    assert type(loaded) is type(model) and loaded.config == model.config
    assert torch.equal(loaded.embed(x), model.embed(x))
    assert torch.equal(loaded.bits(x), model.bits(x))
    codes = model.embed(x)
    assert torch.equal(loaded.decode(codes), model.decode(codes))
    assert torch.equal(loaded.sample(4, calibrated=True, seed=3), model.sample(4, calibrated=True, seed=3))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_numpy_encoder_matches_the_torch_model(trained: Trained, tmp_path: Path) -> None:
    model, x = trained.model, trained.held_out
    encoder = InferenceEncoder.load(checkpoint.save(model, tmp_path / "ckpt"))
    torch_embedding = model.embed(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(encoder.embed(x), torch_embedding, atol=1e-5, rtol=1e-5)
    assert encoder.embed(x).dtype == np.float32
    codes, embedding = encoder.encode(x)
    np.testing.assert_array_equal(codes, encoder.codes(x))
    np.testing.assert_array_equal(embedding, encoder.embed(x))
    torch_bits = model.bits(torch.from_numpy(x)).numpy()
    assert codes.dtype == np.uint8 and codes.shape == (len(x), CODE_SIZE // 8)
    if model.binary_codes:  # the product's hash codes: identical, bit for bit
        np.testing.assert_array_equal(codes, pack_bits(torch_bits))
    else:  # median thresholds: only a value within float error of its threshold may fall either side
        values = model.bit_values(torch.from_numpy(x)).numpy()
        mismatch = np.unpackbits(codes, axis=1).astype(bool) != torch_bits
        gap = np.abs(values - model.bit_threshold.numpy())
        assert (gap[mismatch] <= 1e-4).all(), f"{mismatch.sum()} bits differ away from their threshold"


def test_split_point_lies_between_the_middle_values() -> None:
    values = torch.tensor([[4.0, 1.0], [1.0, 1.0], [3.0, 5.0], [2.0, 7.0]])
    assert torch.equal(variants.split_point(values), torch.tensor([2.5, 3.0]))
    assert torch.equal(variants.split_point(values[:3]), torch.tensor([2.0, 1.0]))  # odd n: the middle item is above
    assert torch.equal(variants.split_point(values[:1]), values[0])
    spread = torch.randn(1001, 6, generator=torch.Generator().manual_seed(0))
    threshold = variants.split_point(spread)
    assert not (spread == threshold).any()  # no item sits on its threshold
    assert ((spread > threshold).sum(0) == 501).all()


def test_an_indexed_image_encoded_alone_gets_the_code_it_got_in_a_batch(tmp_path: Path, fashion, build_model, fit_model) -> None:
    """What `hashae query photo.png` relies on to find an indexed photo at distance 0: the training
    items that set the thresholds, encoded one at a time, match their batched codes bit for bit."""
    train_x = fashion[0][:201]  # odd: one item is the exact middle value of every unit
    model = build_model("hashing", input_shape=train_x.shape[1:], code_size=32, hidden=(32,), code_norm=True, hard_phase=1.0)
    model.fit_normalisation(train_x)
    fit_model(model, train_x, epochs=1, batch_size=32, lr=1e-2)
    model.calibrate(torch.from_numpy(train_x))
    encoder = InferenceEncoder.load(checkpoint.save(model, tmp_path / "ckpt"))
    batched = encoder.codes(train_x)
    alone = np.concatenate([encoder.codes(train_x[i : i + 1]) for i in range(len(train_x))])
    np.testing.assert_array_equal(alone, batched)


def test_numpy_encoder_refuses_inputs_of_the_wrong_shape(tmp_path: Path, build_model) -> None:
    model = build_model("hashing", code_size=8, hidden=(16,))
    encoder = InferenceEncoder.load(checkpoint.save(model, tmp_path / "ckpt"))
    with pytest.raises(HashaeError, match="input shape"):  # a named error, not a numpy traceback
        encoder.codes(np.zeros((2, 28, 28), np.float32))


# ----------------------------------------------------------------------------------------------
# configs and the registry


def test_registry_holds_every_seed_variant() -> None:
    seed = {"linear", "undercomplete", "denoising", "sparse", "contractive", "vae", "hashing"}
    assert seed <= set(variants.known_kinds())
    for kind in variants.known_kinds():
        config_class, model_class = variants.lookup(kind)
        assert config_class.kind == kind and model_class.config_class is config_class


@pytest.mark.parametrize("kind", variants.known_kinds())
def test_config_round_trips_through_json_dict(kind: str) -> None:
    config = variants.make_config(kind, code_size=24, hidden=(12,), corruption={"kind": "gaussian", "strength": 0.3})
    data = json.loads(json.dumps(config.to_dict()))
    assert data["kind"] == kind
    assert variants.make_config(kind, **{k: v for k, v in data.items() if k != "kind"}) == config


def test_unknown_kind_names_every_known_kind() -> None:
    with pytest.raises(ConfigError) as caught:
        variants.make_config("mystery")
    message = str(caught.value)
    assert "mystery" in message
    for kind in variants.known_kinds():
        assert kind in message
    with pytest.raises(ConfigError, match="known kinds"):
        variants.lookup("mystery")


@pytest.mark.parametrize(
    ("kind", "fields", "words"),
    [
        ("undercomplete", {"colour": "blue"}, "colour"),
        ("undercomplete", {"arch": "transformer"}, "arch"),
        ("undercomplete", {"recon_loss": "l7"}, "recon_loss"),
        ("undercomplete", {"code_size": 0}, "positive"),
        ("hashing", {"code_size": 12}, "multiple of 8"),
        ("hashing", {"noise_ramp": 0.0}, "noise_ramp"),
        ("hashing", {"sharpen": 0.5}, "sharpen"),
        ("hashing", {"pair_shift": 2, "input_shape": (20,)}, "image input"),
        ("hashing", {"pair_shift": -1}, "pair_shift"),
        ("denoising", {"corruption": {"kind": "blur", "strength": 0.1}}, "corruption"),
        ("denoising", {"corruption": {"kind": "mask", "strength": 1.5}}, "out of range"),
        ("undercomplete", {"arch": "conv", "input_shape": (20,)}, "image input"),
        ("undercomplete", {"arch": "conv", "input_shape": (1, 30, 30), "hidden": (4, 8)}, "divisible"),
        ("undercomplete", {"arch": "conv", "hidden": ()}, "channel counts"),
        ("sparse", {"sparsity": "abc"}, "sparsity must be a number, got 'abc'"),
        ("sparse", {"sparsity": -0.5}, "sparsity must be >= 0"),
        ("vae", {"beta": -1}, "beta must be >= 0"),
        ("vae", {"beta": float("nan")}, "beta must be a number"),
        ("hashing", {"code_norm": 1}, "code_norm must be true or false"),
        ("hashing", {"code_size": 16.0}, "code_size must be a whole number"),
        ("hashing", {"hidden": [64, "wide"]}, "hidden must be a list of whole numbers"),
        ("hashing", {"hard_phase": 1.5}, "hard_phase must be <= 1"),
        ("hashing", {"temperature": 0}, "temperature must be positive"),
        ("hashing", {"consistency_kind": "triplet"}, "consistency_kind must be one of pull, infonce"),
        ("hashing", {"corruption": "mask"}, "corruption must be a corruption with the fields kind, strength"),
        ("denoising", {"corruption": {"kind": "mask", "strength": "x"}}, "strength must be a number"),
    ],
)
def test_bad_configs_raise_config_error(kind: str, fields: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        variants.create(variants.make_config(kind, **fields))


def test_check_fields_checks_names_types_and_ranges_without_a_shape() -> None:
    variants.check_fields("hashing", {"code_size": 64, "arch": "conv", "hidden": [8, 16, 32, 64, 128]})  # fine alone
    for fields, words in [({"code_size": 12}, "multiple of 8"), ({"colour": 1}, "colour"), ({"balance": "lots"}, "number")]:
        with pytest.raises(ConfigError, match=words):
            variants.check_fields("hashing", fields)
    with pytest.raises(ConfigError, match="known kinds"):
        variants.check_fields("mystery", {})


def test_the_config_classes_hold_the_products_defaults_and_the_shape_rules() -> None:
    image = variants.make_config("hashing", input_shape=(3, 32, 32), code_size=32)
    assert image == variants.HashingConfig(input_shape=(3, 32, 32)) and variants.make_config("hashing") == variants.HashingConfig()
    assert (image.recon_loss, image.corruption, image.pair_shift, image.decorrelation) == ("bce", variants.Corruption("mask", 0.2), 1, 0.0)
    assert (image.hidden, image.code_norm, image.hard_phase, image.consistency_kind, image.sharpen) == ((1024,), True, 1.0, "infonce", 8.0)
    assert (image.standardise_images, image.centre_images, image.augmentation.active) == (True, False, False)
    vector = variants.make_config("hashing", input_shape=(20,), code_size=64)
    assert (vector.recon_loss, vector.corruption, vector.pair_shift) == ("mse", variants.Corruption("gaussian", 0.2), 0)
    assert not vector.standardise_images
    assert vector.decorrelation == variants.DECORRELATION_WEIGHT
    assert variants.make_config("denoising", input_shape=(20,)).corruption == variants.Corruption("gaussian", 0.2)
    assert variants.make_config("denoising").corruption == variants.Corruption("mask", 0.3)
    assert variants.make_config("undercomplete", input_shape=(20,)).recon_loss == "mse"
    assert variants.make_config("linear").recon_loss == "mse"  # linear = PCA: MSE whatever the input
    explicit = variants.make_config("hashing", input_shape=(20,), recon_loss="bce", corruption={"kind": "none", "strength": 0})
    assert (explicit.recon_loss, explicit.corruption.kind) == ("bce", "none")  # a given value always wins
    assert variants.make_config("undercomplete", hidden=64).hidden == (64,)


def test_bce_model_refuses_inputs_outside_unit_interval(build_model) -> None:
    model = build_model("undercomplete", input_shape=(4,), hidden=(8,), code_size=2, recon_loss="bce")
    with pytest.raises(ConfigError, match="recon_loss=mse"):
        model.fit_normalisation(np.array([[0.0, 0.5, 1.0, 2.0]], np.float32))


# ----------------------------------------------------------------------------------------------
# the trainer


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_stops_training_with_a_clear_message(bad: float, fashion, build_model) -> None:
    x = fashion[0][:128].copy()
    x[5, 0, 3, 3] = bad
    model = build_model("undercomplete", hidden=(16,), code_size=8)
    with pytest.raises(TrainingError) as caught:
        trainer.train(model, x, TrainConfig(epochs=1, batch_size=32, seed=0))
    message = str(caught.value)
    assert "\n" not in message and "epoch 1" in message and "learning rate" in message
    assert "nan" in message.lower()


def test_too_few_items_raise_training_error(build_model) -> None:
    model = build_model("undercomplete", input_shape=(4,), hidden=(8,), code_size=2)
    with pytest.raises(TrainingError, match="at least 2"):
        trainer.train(model, np.zeros((1, 4), np.float32))


def test_seed_makes_runs_identical_and_another_seed_differs(fashion, build_model, fit_model) -> None:
    """Same seed: same split, batch order, corruption and noise, so the same weights, bit for bit."""
    x = fashion[0][:128]

    def run(seed: int):
        model = build_model("hashing", seed=seed, code_size=8, hidden=(16,))
        history = fit_model(model, x, epochs=2, batch_size=32, seed=seed, val_fraction=0.25)
        return model, history

    (a, history_a), (b, history_b), (c, history_c) = run(0), run(0), run(1)
    assert history_a.epochs == history_b.epochs
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert history_a.epochs != history_c.epochs
    assert not torch.equal(a.encoder[0].weight, c.encoder[0].weight)


def test_history_has_named_terms_per_epoch(fashion, build_model, fit_model) -> None:
    model = build_model("sparse", hidden=(16,), code_size=8, sparsity=0.5)
    history = fit_model(model, fashion[0][:128], epochs=3, batch_size=32, val_fraction=0.25)
    assert len(history.epochs) == 3 and history.best_epoch == 2 and not history.stopped_early
    assert history.final == history.epochs[-1] and history.seconds > 0
    for record in history.epochs:
        assert set(record) == {"loss", "reconstruction", "sparsity", "val_loss"}
        assert record["loss"] == pytest.approx(record["reconstruction"] + record["sparsity"], rel=1e-5)
        assert all(math.isfinite(v) for v in record.values())


def test_early_stopping_stops_and_restores_the_best_weights(build_model) -> None:
    """Random vectors have nothing to learn beyond their mean, so the held-out loss soon stops
    improving (here after ~40 epochs of 300): training must stop `patience` epochs after the best
    one and hand back that epoch's weights, not the last ones."""
    x = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    model = build_model("undercomplete", input_shape=(16,), hidden=(128,), code_size=16, recon_loss="bce")
    snapshots: list[dict[str, torch.Tensor]] = []
    config = TrainConfig(epochs=300, batch_size=32, lr=1e-2, schedule="constant", val_fraction=0.5, patience=5)
    history = trainer.train(
        model, x, config, on_epoch=lambda epoch, record: snapshots.append(copy.deepcopy(model.state_dict()))
    )
    val = [record["val_loss"] for record in history.epochs]
    assert history.stopped_early and len(val) < config.epochs
    assert history.best_epoch == int(np.argmin(val))
    assert len(val) == history.best_epoch + 1 + config.patience
    assert min(val[history.best_epoch + 1 :]) >= val[history.best_epoch]
    best = snapshots[history.best_epoch]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best[name]), name
    assert not torch.equal(model.encoder[0].weight, snapshots[-1]["encoder.0.weight"])


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'; known: adam"),
        ({"schedule": "step"}, "unknown schedule 'step'; known: onecycle"),
        ({"epochs": 0}, "positive"),
        ({"lr": -1.0}, "positive"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_train_configs_raise_config_error(fields: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**fields)


def test_train_config_for_gives_hashing_its_own_rate_and_lets_given_fields_win() -> None:
    assert trainer.train_config_for("vae", seed=3).lr == TrainConfig().lr
    hashing = trainer.train_config_for("hashing", seed=3, lr=None)
    assert hashing.lr != TrainConfig().lr and hashing.seed == 3
    assert hashing.lr == variants.HashingConfig.TRAINING["lr"]
    assert trainer.train_config_for("hashing", lr=1e-4).lr == 1e-4


def test_default_hashing_config_decorrelates_long_codes_of_vectors_only() -> None:
    from hashae.variants import DECORRELATE_FROM_BITS

    def decorrelation(bits: int, shape=(40,), **overrides) -> float:
        return variants.make_config("hashing", input_shape=shape, code_size=bits, **overrides).decorrelation

    assert decorrelation(DECORRELATE_FROM_BITS) > 0 and decorrelation(2 * DECORRELATE_FROM_BITS) > 0
    assert decorrelation(DECORRELATE_FROM_BITS - 8) == 0
    assert decorrelation(DECORRELATE_FROM_BITS, shape=(1, 28, 28)) == 0  # standardised images: off
    assert decorrelation(16, decorrelation=5.0) == 5.0  # an explicit setting wins


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_every_optimizer_and_schedule_trains(optimizer: str, schedule: str, build_model) -> None:
    x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
    model = build_model("undercomplete", input_shape=(8,), hidden=(8,), code_size=4, recon_loss="bce")
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-2, optimizer=optimizer, schedule=schedule, val_fraction=0)
    history = trainer.train(model, x, config)
    assert len(history.epochs) == 2 and all(math.isfinite(r["loss"]) for r in history.epochs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        trainer.resolve_device("cuda")
    assert trainer.resolve_device("auto") == CPU


def test_random_shift_moves_each_image_by_its_own_offset_within_range() -> None:
    torch.manual_seed(0)
    x = torch.zeros(400, 2, 9, 9)
    x[:, :, 4, 4] = 1.0  # one lit pixel in the centre of both channels
    shifted = variants.random_shift(x, 2)
    assert torch.equal(variants.random_shift(x, 0), x)
    offsets = set()
    for image in shifted:
        lit = image[0].nonzero().tolist()
        assert len(lit) == 1 and torch.equal(image[0], image[1])  # one offset per image, all channels
        dy, dx = lit[0][0] - 4, lit[0][1] - 4
        assert abs(dy) <= 2 and abs(dx) <= 2
        offsets.add((dy, dx))
    assert len(offsets) == 25  # every offset in [-2, 2]^2 occurs
    edge = torch.zeros(1, 1, 5, 5)
    edge[0, 0, 0, :] = 1.0
    assert variants.random_shift(edge, 4).sum() <= 5  # zeros shifted in, nothing wraps around


# ------------------------------------------------------------------ noise-injected saturated codes
def test_the_default_hashing_model_injects_noise_before_a_gained_sigmoid() -> None:
    config = variants.make_config("hashing")
    assert (config.noise_max, config.noise_ramp, config.code_gain, config.code_norm, config.hard_phase) == (4.0, 0.33, True, True, 1.0)


def test_injected_noise_flips_the_hard_code_of_units_near_their_threshold(build_model) -> None:
    model = build_model("hashing", input_shape=(1, 8, 8), code_size=16, hidden=(32,), noise_max=4.0, noise_ramp=0.5)
    model.train()
    z = torch.linspace(-0.5, 0.5, 64)[:, None].repeat(1, 16)  # (64, 16): units near their centre
    standardised = model.preactivation(z) > 0
    noisy = model.latent(z, progress=1.0)
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}  # hard 0/1 codes (straight-through)
    assert (noisy.bool() != standardised).float().mean() > 0.2
    quiet = model.latent(z, progress=0.0)  # the ramp starts at no noise
    assert torch.equal(quiet.bool(), standardised)


def test_gain_grows_so_units_saturate_and_resist_the_training_noise(fashion, build_model, fit_model) -> None:
    x, held_out = fashion[0][:512], torch.from_numpy(fashion[1])
    fields = {"code_size": 16, "hidden": (64,), "consistency": 0.0, "noise_max": 4.0, "noise_ramp": 0.3}
    model = build_model("hashing", **fields)
    fit_model(model, x, epochs=12)
    model.calibrate(torch.from_numpy(x))
    assert model.gain().mean() > 1.2  # learned, not fixed
    saturated = ((model.code_activations(held_out) - 0.5).abs() > 0.4).float().mean()
    frozen = build_model("hashing", code_gain=False, **fields)
    fit_model(frozen, x, epochs=12)
    frozen.calibrate(torch.from_numpy(x))
    frozen_saturated = ((frozen.code_activations(held_out) - 0.5).abs() > 0.4).float().mean()
    assert saturated > frozen_saturated + 0.1
    assert model.noise_flip_share(held_out) < frozen.noise_flip_share(held_out)
    no_noise = build_model("hashing", code_size=16, hidden=(64,), noise_max=0.0)
    assert no_noise.noise_flip_share(held_out) == 0.0


def test_a_checkpoint_written_before_the_gain_loads_with_gain_one(build_model) -> None:
    model = build_model("hashing", input_shape=(1, 8, 8), code_size=16, hidden=(32,))
    state = {k: v for k, v in model.state_dict().items() if k != "code_log_gain"}
    other = build_model("hashing", seed=1, input_shape=(1, 8, 8), code_size=16, hidden=(32,))
    with torch.no_grad():
        other.code_log_gain.fill_(2.0)
    other.load_state_dict(state)
    assert torch.equal(other.gain(), torch.ones(16))


def test_fit_default_knows_the_seeds_plain_recipe_and_reports_code_stats(fashion) -> None:
    from hashae import recipes

    fitted = recipes.fit_default("seed", fashion[0][:256], code_size=16, epochs=1, device="cpu")
    c = fitted.model.config
    assert (c.kind, c.noise_max, c.hard_phase, c.code_norm, c.code_gain, c.consistency, c.balance) == ("hashing", 4.0, 0.0, False, False, 0.0, 0.0)
    assert c.corruption.kind == "none" and not fitted.model.median_threshold  # bits at sigmoid 0.5
    stats = fitted.summary()["code_stats"]
    assert {"saturated_share", "bit_balance_std", "mean_bit_entropy", "noise_flip_share"} <= set(stats)
    assert 0 <= stats["noise_flip_share"] <= 1


def test_neighbours_are_found_in_the_view_the_encoder_sees(fashion, monkeypatch) -> None:
    """A standardising model's label-free neighbours come from the standardised images: an image
    and a darker copy of it (the same after standardisation) are each other's nearest neighbour."""
    from hashae import recipes
    from hashae.inference import image_view

    x = fashion[0][:200].copy()
    x[100:] = 0.4 * x[:100]  # items 100-199: darker copies of items 0-99
    seen = []
    real_nearest = recipes.nearest
    monkeypatch.setattr(recipes, "nearest", lambda view, **kw: seen.append(view) or real_nearest(view, **kw))
    config = variants.make_config("hashing", input_shape=x.shape[1:], code_size=16, hidden=(32,))
    recipes.fit(config, x, TrainConfig(epochs=1, batch_size=64))
    (view,) = seen
    np.testing.assert_array_equal(view, image_view(x, centre=False, standardise=True))
    pairs = recipes.nearest(view, k=1, dims=16)
    assert (pairs[:100, 0] == np.arange(100, 200)).mean() > 0.95  # in raw pixels they would not be
    assert (recipes.nearest(x, k=1, dims=16)[:100, 0] == np.arange(100, 200)).mean() < 0.5
