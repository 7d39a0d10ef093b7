"""The CLI shell: progress output, config validation before any data is read, the product's defaults
as `hashae train` gets them, and the ecosystem (--version, -h, completion, one-line command summaries,
what `generate` and `inspect` draw)."""

from __future__ import annotations

import shlex
import subprocess
import sys

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hashae.cli.main import app, first_sentence
from hashae.cli.progress import PlainRenderer, reporter
from hashae.events import Event, message, silent, task

SEED_RECIPE_FLAGS = ["--set", "noise_max=4", "--set", "hard_phase=0", "--set", "code_norm=false", "--set", "consistency=0"]


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def ok(*args: object):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result, *words: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def saved_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


# ------------------------------------------------------------------------------------- progress
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_renderer_writes_a_line_at_start_every_interval_and_at_the_end():
    stream, clock = io.StringIO(), FakeClock()
    render = PlainRenderer(stream, clock=clock, interval=5.0)
    with task(render, "training hashing model", total=100) as t:
        for _ in range(40):  # 40 steps in 8 s: one line at 5 s, none before
            clock.now += 0.2
            t.advance(info="loss 812")
        message(render, "calibrating")
        clock.now += 2.0
        t.advance(60)
    assert stream.getvalue().splitlines() == [
        "training hashing model: started, 100 to do",
        "training hashing model: 25/100 (25%), 5/s, ETA 15.0s (loss 812)",
        "calibrating",
        "training hashing model: 100/100 (100%) in 10.0s, 10/s",
    ]


def test_plain_renderer_without_a_total_and_with_long_durations():
    stream, clock = io.StringIO(), FakeClock()
    render = PlainRenderer(stream, clock=clock, interval=5.0)
    with task(render, "decoding", total=None) as t:
        clock.now += 6.0
        t.advance(120)
        clock.now += 300.0
        t.advance(30_000)
    with task(render, "encoding", total=1_000_000) as t:
        clock.now += 10.0
        t.advance(2_500)
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["decoding: started", "decoding: 120, 20/s", "decoding: 30120, 98/s"]
    assert lines[3] == "decoding: 30120 in 5m06s, 98/s"
    assert lines[5] == "encoding: 2500/1000000 (0%), 250/s, ETA 1h06m"


def test_rich_renderer_draws_one_bar_per_task_with_its_info():
    from hashae.cli.progress import RichRenderer

    stream = io.StringIO()
    with RichRenderer(stream) as render:
        with task(render, "training VAE", total=4) as t:
            t.advance(4, info="kl 0.25")
        with task(render, "encoding", total=None) as t:
            t.advance(7)
        message(render, "all done")
    text = stream.getvalue()
    assert "training VAE" in text and "4/4" in text and "kl 0.25" in text
    assert "encoding" in text and "all done" in text


def test_quiet_reporter_is_silent_and_a_captured_stderr_gets_plain_lines(capsys):
    with reporter(True) as report:
        assert report is silent
    with reporter(False) as report:
        assert isinstance(report, PlainRenderer)  # pytest's captured stderr is not a terminal
        with task(report, "encoding", total=3) as t:
            t.advance(3)
    assert capsys.readouterr().err.splitlines()[-1].startswith("encoding: 3/3 (100%) in ")


def test_train_under_a_runner_prints_plain_progress_to_stderr(tmp_path):
    out = tmp_path / "model"
    result = ok("train", "fashion-mnist:test", "--limit", 64, "--epochs", 2, "--out", out, "--device", "cpu")
    lines = result.stderr.splitlines()
    assert lines[0] == "finding neighbours for the hashing model: started, 64 to do", result.stderr
    assert lines[2] == "training hashing model: started, 2 to do", result.stderr
    assert re.fullmatch(r"training hashing model: 2/2 \(100%\) in [\d.]+s(, [\d.,]+/s)?", lines[-1]), lines[-1]
    assert "saved to" in result.stdout and "training" not in result.stdout
    quiet = ok("train", "fashion-mnist:test", "--limit", 64, "--epochs", 1, "--out", tmp_path / "quiet", "-q")
    assert quiet.stderr == ""


def test_datasets_export_reports_plain_progress(tmp_path):
    result = ok("datasets", "export", "fashion-mnist", tmp_path / "images", "--split", "test", "--limit", 5)
    assert len(list((tmp_path / "images").rglob("*.png"))) == 5
    assert "5/5 (100%)" in result.stderr.splitlines()[-1] and "exported 5" in result.stdout


# ------------------------------------------------------------------------- the product's defaults
def test_train_gets_what_make_config_and_fit_default_give(tmp_path):
    """`hashae train --variant hashing` == the store's model (trained through fit_default) ==
    make_config(kind, input_shape=..., code_size=...)."""
    from hashae.recipes import fit_default
    from hashae.trainer import train_config_for
    from hashae.variants import make_config

    ok("train", "fashion-mnist:test", "--limit", 64, "--epochs", 1, "--bits", 16, "--out", tmp_path / "h", "-q")
    expected = make_config("hashing", input_shape=(1, 28, 28), code_size=16)
    assert saved_config(tmp_path / "h")["config"] == json.loads(json.dumps(expected.to_dict()))
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    assert fit_default("hashing", x, code_size=16, epochs=1, device="cpu").model.config == expected
    assert train_config_for("hashing").lr == 6e-3  # the kind's own rate, what train and index use
    assert expected.hidden == (1024,) and expected.code_norm and expected.consistency_kind == "infonce"


def test_the_seed_recipe_is_reachable_with_the_readme_flags(tmp_path):
    ok("train", "fashion-mnist:test", "--limit", 64, "--epochs", 1, "--out", tmp_path / "seed", "-q", *SEED_RECIPE_FLAGS)
    config = saved_config(tmp_path / "seed")["config"]
    assert (config["noise_max"], config["hard_phase"], config["code_norm"], config["consistency"]) == (4.0, 0.0, False, 0.0)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert " ".join(SEED_RECIPE_FLAGS) in readme


def test_vectors_get_mse_and_gaussian_corruption_and_no_pair_shift(tmp_path):
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(64, 12)).astype(np.float32))
    ok("train", vectors, "--epochs", 1, "--bits", 8, "--out", tmp_path / "v", "-q")
    config = saved_config(tmp_path / "v")["config"]
    assert config["recon_loss"] == "mse" and config["pair_shift"] == 0
    assert config["corruption"] == {"kind": "gaussian", "strength": 0.2}


# --------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--variant", "sparse", "--set", "sparsity=abc"], ["sparsity", "number", "abc"]),
        (["--set", "code_size=5"], ["code_size", "multiple of 8", "5"]),
        (["--variant", "vae", "--set", "beta=-1"], ["beta", ">= 0"]),
        (["--variant", "mystery"], ["mystery", "known kinds", "hashing"]),
        (["--set", "colour=blue"], ["colour", "known"]),
        (["--set", "code_norm=1"], ["code_norm", "true or false"]),
        (["--set", "hidden=[64,0]"], ["hidden", "positive"]),
        (["--set", "corruption=blur:0.1"], ["corruption", "blur"]),
        (["--set", "temperature=0"], ["temperature", "positive"]),
        (["--bits", "12"], ["multiple of 8"]),
        (["--lr", "-1"], ["lr", "positive"]),
    ],
)
def test_bad_settings_are_one_line_before_any_data_is_read(args, words, tmp_path):
    """The data path does not exist: an error about the settings proves they were checked first."""
    result = invoke("train", tmp_path / "no-such-folder", "--out", tmp_path / "m", *args)
    line = one_line_error(result, *words)
    assert "no-such-folder" not in line
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bits", "16", "--set", "code_size=16"], ["code size once"]),
        (["--set", "input_shape=[3,8,8]"], ["input_shape", "data"]),
        (["--set", "corruption=mask:lots"], ["strength", "number"]),
        (["--set", "sparsity"], ["key=value"]),
        (["--bits", "8", "--latent", "8"], ["--bits or --latent"]),
    ],
)
def test_contradictory_flags_are_usage_errors(args, words, tmp_path):
    one_line_error(invoke("train", tmp_path / "no-such-folder", "--out", tmp_path / "m", *args), *words, code=2)


def test_a_rule_between_fields_is_one_line_once_the_shape_is_known(tmp_path):
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.zeros((8, 12), np.float32))
    one_line_error(invoke("train", vectors, "--out", tmp_path / "m", "--set", "pair_shift=2"), "pair_shift", "image input")
    one_line_error(invoke("train", vectors, "--out", tmp_path / "m", "--arch", "conv"), "conv", "image input")


# ---------------------------------------------------------------------------------- ecosystem
def all_commands() -> list[tuple[list[str], object]]:
    found = []

    def walk(command, path):
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found.append((path + [name], sub))
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return found


def test_version():
    from importlib.metadata import version

    assert ok("--version").stdout.strip() == f"hashae {version('hashae')}"


def test_dash_h_is_help_on_every_command():
    assert "Usage:" in ok("-h").stdout
    for path, _ in all_commands():
        assert ok(*path, "-h").stdout == ok(*path, "--help").stdout, path


def test_shell_completion_is_offered():
    top = ok("--help").stdout
    assert "--install-completion" in top and "--show-completion" in top
    # completion is for the user's shell: detected from the parent process, so run it from bash
    # (under make the tests' parent is sh, which Typer does not support)
    command = f"{shlex.quote(str(Path(sys.executable).parent / 'hashae'))} --show-completion; exit $?"  # bash stays the parent (no exec)
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "_hashae_completion" in done.stdout and "complete" in done.stdout


def test_the_command_list_shows_whole_first_sentences_on_one_line():
    for path, command in all_commands():
        summary = command.short_help or ""
        assert summary and "\n" not in summary and summary.endswith("."), (path, summary)
    assert first_sentence("Index a folder\n    of images: train. Then more.\n\nDetails.") == "Index a folder of images: train."
    assert first_sentence("Write (config.json + weights.safetensors) files.") == "Write (config.json + weights.safetensors) files."


def test_a_closed_output_pipe_is_a_quiet_exit():
    from hashae.cli.common import SIGPIPE_EXIT, handle_errors

    @handle_errors
    def writes_into_a_closed_pipe():
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(typer.Exit) as stopped:
        writes_into_a_closed_pipe()
    assert stopped.value.exit_code == SIGPIPE_EXIT


# ------------------------------------------------------------------------------ generate, inspect
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """An undercomplete, a VAE and a 16x16 colour model, each trained for one epoch."""
    base = tmp_path_factory.mktemp("models")
    folders = {}
    for kind in ("undercomplete", "vae"):
        folders[kind] = base / kind
        ok("train", "fashion-mnist:test", "--variant", kind, "--limit", 64, "--epochs", 1, "--latent", 4, "--out", folders[kind], "-q")
    folders["colour"] = base / "colour"
    images = tmp_path_factory.mktemp("colour-images")
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(images / f"c{i:02d}.png")
    ok("train", images, "--variant", "vae", "--image-size", 16, "--channels", 3, "--epochs", 1, "--latent", 4, "--out", folders["colour"], "-q")
    folders["colour_images"] = images
    return folders


def test_generate_says_what_a_plain_autoencoders_naive_panel_is(trained, tmp_path):
    text = ok("generate", "--model", trained["undercomplete"], "-n", 4, "--out", tmp_path / "g.png").stdout
    assert "no prior" in text and "independently" in text and (tmp_path / "g.png").is_file()
    text = ok("generate", "--model", trained["vae"], "-n", 4, "--out", tmp_path / "v.png").stdout
    assert "N(0, I)" in text and "no prior" not in text
    calibrated = ok("generate", "--model", trained["undercomplete"], "-n", 4, "--prior", "calibrated", "--out", tmp_path / "c.png").stdout
    assert "no prior" not in calibrated and "training items" in calibrated


def test_generate_never_creates_folders_for_its_output(trained, tmp_path):
    one_line_error(invoke("generate", "--model", trained["vae"], "--out", tmp_path / "missing" / "g.png"), "missing", code=2)
    assert not (tmp_path / "missing").exists()


def test_inspect_reads_the_data_a_trained_model_records(trained, tmp_path):
    text = ok("inspect", "--model", trained["colour"], "-n", 3, "--out", tmp_path / "c.png").stdout
    assert "wrote 3 inputs" in text and (tmp_path / "c.png").is_file()
    text = ok("inspect", "--model", trained["vae"], "-n", 2, "--out", tmp_path / "v.png").stdout
    assert "wrote 2 inputs" in text


def test_inspect_refuses_to_guess_data_for_a_model_that_does_not_say(trained, tmp_path):
    """A checkpoint without a recorded source, not shaped like Fashion-MNIST: refused, not drawn."""
    folder = tmp_path / "anonymous"
    import shutil

    shutil.copytree(trained["colour"], folder)
    document = saved_config(folder)
    document["info"].pop("source")
    (folder / "config.json").write_text(json.dumps(document))
    one_line_error(invoke("inspect", "--model", folder, "--out", tmp_path / "x.png"), "(3, 16, 16)", "--data", code=2)
    assert not (tmp_path / "x.png").exists()
    ok("inspect", "--model", folder, "--data", trained["colour_images"], "-n", 2, "--out", tmp_path / "x.png")


def store_model_dirs(store_dir: Path) -> tuple[Path, Path]:
    """(hashing, latent) checkpoint folders of a store's newest model pair."""
    from hashae.index.backends import open_store

    store = open_store(store_dir)
    try:
        pair = store.latest_models()
        return store.model_dir(pair.hashing), store.model_dir(pair.latent)
    finally:
        store.close()


def test_the_store_trains_make_configs_models(indexed_library):
    """`hashae index` trains the product's configs, the ones make_config and `hashae train` give."""
    from hashae.variants import make_config

    _, store_dir = indexed_library
    for kind, folder in zip(("hashing", "vae"), store_model_dirs(store_dir)):
        saved = saved_config(folder)["config"]
        expected = make_config(kind, input_shape=tuple(saved["input_shape"]), code_size=saved["code_size"])
        assert saved == json.loads(json.dumps(expected.to_dict())), kind


def test_inspect_defaults_to_the_store_folder_for_a_store_model(indexed_library, tmp_path):
    _, store_dir = indexed_library
    hashing_dir, _ = store_model_dirs(store_dir)
    text = ok("inspect", "--model", hashing_dir, "-n", 2, "--out", tmp_path / "s.png").stdout
    assert "wrote 2 inputs" in text
