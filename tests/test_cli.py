"""The ``ood-score`` command (``python -m ood_lib score``): conversion rules, the CSV, errors.

A tiny smoke Glow on Fashion-MNIST is trained once (seconds) into a temporary build folder;
every image is written here with Pillow.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ood_lib import catalogue, cli, ingest, scores, transforms
from ood_lib.models.base import evaluate
from ood_lib.paths import PROJECT_ROOT
from ood_lib.zoo import background, ensemble, registry

# every test here scores with a smoke Glow trained on the fly (seconds each)
pytestmark = pytest.mark.slow

TEST_IMAGES = "64"  # reference images per set: enough for an AUROC, fast under smoke


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    """A smoke Glow on Fashion-MNIST, trained on the fly into a temporary build folder (which
    stays the build folder, and so the results folder, for the whole module)."""
    build = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OOD_BUILD_DIR", str(build))
        mp.delenv("OOD_RESULTS_DIR", raising=False)
        mp.setenv("OMP_NUM_THREADS", "1")
        yield registry.get("glow", "fashion_mnist", "smoke", data_root=data_root, progress=False)


def score(args: list[str], capsys: pytest.CaptureFixture, data_root: Path,
          profile: str = "smoke") -> tuple[int, str, str]:
    code = cli.main(["--model", "glow", "--trained-on", "fashion_mnist", "--profile", profile,
                     "--data-root", str(data_root), "--test-images", TEST_IMAGES, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def exif_jpeg(path: Path, orientation: int = 6) -> None:
    """A 40x20 JPEG, left half black and right half white, with an EXIF orientation tag."""
    x = np.zeros((20, 40, 3), np.uint8)
    x[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(x).save(path, quality=95, exif=exif)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """One image of each kind the rules cover, one corrupt file and one non-image file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), "RGBA").save(
        folder / "rgba.png")
    palette = Image.fromarray(rng.integers(0, 4, (24, 24), dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    palette.save(folder / "palette.gif", transparency=0)
    Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16)).save(folder / "grey16.png")
    exif_jpeg(folder / "rotated.jpg")
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(folder / "big.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not an image")
    return folder


# --- the command ----------------------------------------------------------------------------


def test_folder_of_mixed_images(smoke_model, image_folder: Path, tmp_path: Path, data_root: Path,
                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "scores.csv"
    code, stdout, _ = score([str(image_folder), "--out", str(out)], capsys, data_root)
    assert code == 0, stdout
    assert "skipped corrupt.png" in stdout and "skipped 1 unreadable" in stdout
    assert "Scored 6 image(s)" in stdout and "ignored 1 non-image file" in stdout
    assert "AUROC" in stdout and "(--test-images 64)" in stdout
    assert "at least a few images" in stdout
    # this build has no background model or ensemble: their scores are left out, not trained,
    # each with the command that trains what it needs
    assert ("Left out, likelihood ratio: no background Glow for fashion_mnist" in stdout
            and "python -m ood_lib.zoo.background --profile smoke --model glow" in stdout)
    assert "Left out, WAIC: no ensemble member with seed 1" in stdout
    assert str(out) in stdout
    frame = pd.read_csv(out)
    # the book's scores under the book's keys (ood_lib.scores.per_image_scores)
    assert list(frame.columns) == cli.CSV_COLUMNS + ["bpd", "typicality", "complexity_png",
                                                     "dos_joint_kde", "dose_kde", "dose_svm"]
    assert np.isfinite(frame[["dose_kde", "dose_svm"]]).all().all()
    assert "DoSE-KDE" in stdout and "DoSE-SVM" in stdout
    assert sorted(frame["file"]) == sorted(
        ["big.png", "grey16.png", "palette.gif", "rgb.png", "rgba.png", "rotated.jpg"])
    rows = frame.set_index("file")
    assert (rows.loc["big.png", "width"], rows.loc["big.png", "height"]) == (640, 480)
    assert "EXIF orientation 6 applied" in rows.loc["rotated.jpg", "converted"]
    assert "I;16->L" in rows.loc["grey16.png", "converted"]
    assert "P->RGBA" in rows.loc["palette.gif", "converted"]
    assert "alpha over white" in rows.loc["rgba.png", "converted"]
    assert "RGB->L (BT.601 luma)" in rows.loc["rgb.png", "converted"]
    assert "centre-cropped to 28x28" in rows.loc["big.png", "converted"]
    assert np.isfinite(frame[["bpd", "log_px_nats", "typicality", "complexity_png"]]).all().all()
    # bits/dim and nats agree: bpd = -log p / (D ln 2) + 8 for a flow
    np.testing.assert_allclose(frame["bpd"], -frame["log_px_nats"] / (784 * np.log(2)) + 8)
    np.testing.assert_allclose(frame["complexity_png"], frame["bpd"] * 784 - frame["png_bits"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_npz_input(smoke_model, tmp_path: Path, data_root: Path,
                   capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x=x, y=np.zeros(12, np.int64))
    loaded = ingest.load_npz(tmp_path / "mine.npz", 1, 28, 255)
    np.testing.assert_array_equal(loaded.images, x)  # already in the geometry: used as is
    assert {r["converted"] for r in loaded.rows} == {"none"}

    out = tmp_path / "scores.csv"
    code, stdout, _ = score([str(tmp_path / "mine.npz"), "--out", str(out)], capsys, data_root)
    assert code == 0 and "Scored 12 image(s)" in stdout
    frame = pd.read_csv(out)
    assert list(frame["file"]) == [f"mine.npz[{i}]" for i in range(12)]

    # other geometries go through the same rules: RGB 40x30 -> grey 28x28
    rgb = rng.integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=rgb)
    loaded = ingest.load_npz(tmp_path / "rgb.npz", 1, 28, 255)
    assert loaded.images.shape == (3, 28, 28, 1)
    assert "RGB->L" in loaded.rows[0]["converted"]


@pytest.mark.parametrize("content", ["empty", "only corrupt"])
def test_no_readable_image_is_exit_2(content: str, tmp_path: Path, data_root: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    if content == "only corrupt":
        (folder / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "scores.csv"
    code, _, err = score([str(folder), "--out", str(out)], capsys, data_root)
    assert code == 2
    assert "no readable image" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_checkpoint_is_exit_2(image_folder: Path, tmp_path: Path, data_root: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "no_checkpoints"
    empty.mkdir()
    monkeypatch.setenv("OOD_CHECKPOINTS", str(empty))
    monkeypatch.delenv(catalogue.TRAIN_MISSING_ENV, raising=False)
    out = tmp_path / "scores.csv"
    code, _, err = score([str(image_folder), "--out", str(out)], capsys, data_root,
                         profile="cpu")
    assert code == 2
    assert "no checkpoint" in err and "Traceback" not in err
    assert registry.train_command("glow", "fashion_mnist", "cpu") in err
    assert not out.exists() and not list(empty.iterdir())  # nothing trained


def test_unknown_model_is_exit_2(tmp_path: Path) -> None:
    """Through ``python -m ood_lib score``, as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "ood_lib", "score", "--model", "nope", "--trained-on",
         "fashion_mnist", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / cli.DEFAULT_OUT).exists()


def test_main_dispatch_and_console_script() -> None:
    from ood_lib.__main__ import main

    assert main(["--help"]) == 0
    assert main(["nope"]) == 2
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ood-score"] == "ood_lib.cli:main"


def test_failure_midway_leaves_no_csv(smoke_model, image_folder: Path, tmp_path: Path,
                                      data_root: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "scores.csv"

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure while scoring")

    monkeypatch.setattr(cli, "evaluate", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        score([str(image_folder), "--out", str(out)], capsys, data_root)
    assert not list(out_dir.iterdir())
    monkeypatch.undo()

    # a failure while the CSV is being written: the temporary file goes, an old CSV stays
    out.write_text("old results\n")
    real_to_csv = pd.DataFrame.to_csv

    def half_then_fail(self, f, **kwargs):
        real_to_csv(self.iloc[:2], f, **kwargs)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        score([str(image_folder), "--out", str(out)], capsys, data_root)
    assert [p.name for p in out_dir.iterdir()] == ["scores.csv"]
    assert out.read_text() == "old results\n"


# --- the conversion rules -------------------------------------------------------------------


def test_exif_orientation_applied(tmp_path: Path) -> None:
    exif_jpeg(tmp_path / "r.jpg", orientation=6)
    with Image.open(tmp_path / "r.jpg") as img:
        assert img.size == (40, 20)
        converted, notes = ingest.convert_image(img, 1, 28)
        raw = np.asarray(img.convert("RGB"))  # the stored pixels, orientation not applied
    assert "EXIF orientation 6 applied" in notes
    # orientation 6: shown rotated 90 degrees clockwise (the stored left side at the top)
    expected, _ = ingest.convert_array(np.rot90(raw, k=-1), 1, 28)
    np.testing.assert_array_equal(converted, expected)
    assert converted[:10].mean() < 30 and converted[-10:].mean() > 225


def test_alpha_over_white_and_black() -> None:
    colour = np.array([[[200, 100, 50], [10, 20, 30], [90, 90, 90]]], np.uint8)
    alpha = np.array([[128, 0, 255]], np.uint8)
    white = ingest.composite_alpha(colour, alpha, 255)
    black = ingest.composite_alpha(colour, alpha, 0)
    a = alpha[..., None] / 255
    np.testing.assert_array_equal(white, np.round(colour * a + 255 * (1 - a)))
    np.testing.assert_array_equal(black, np.round(colour * a))
    assert white[0, 1].tolist() == [255, 255, 255] and black[0, 1].tolist() == [0, 0, 0]
    assert white[0, 2].tolist() == black[0, 2].tolist() == [90, 90, 90]  # opaque: unchanged
    rgba = Image.fromarray(np.concatenate([colour, alpha[..., None]], axis=-1), "RGBA")
    x, notes = ingest.drop_alpha(rgba, background=0)
    assert notes == ["alpha over black"]
    np.testing.assert_array_equal(x, black)
    # random colours and alphas: the integer rule is round() exactly (there are no ties)
    rng = np.random.default_rng(0)
    c = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    al = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    f = al[..., None] / 255
    np.testing.assert_array_equal(ingest.composite_alpha(c, al, 255), np.round(c * f + 255 * (1 - f)))


def test_luma_for_rgb_to_grey() -> None:
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [77, 77, 77]]], np.uint8)
    assert transforms.luma(primaries).tolist() == [[76, 150, 29, 77]]
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(transforms.luma(x)[2:30, 2:30],
                                  transforms.rgb32_to_grey28(x[None])[0, ..., 0])
    grey, notes = ingest.to_channels(x, 1)
    assert grey.shape == (32, 32, 1) and notes == ["RGB->L (BT.601 luma)"]
    rgb, notes = ingest.to_channels(grey, 3)
    assert rgb.shape == (32, 32, 3) and (rgb == grey).all() and notes == ["L->RGB (channel repeated)"]


def test_16_bit_scaling(tmp_path: Path) -> None:
    levels = np.array([0, 257, 257 * 100, 32768, 65535, 70000, -5])
    assert ingest.scale_16bit(levels).tolist() == [0, 1, 100, 128, 255, 255, 0]
    v = np.arange(65536)
    np.testing.assert_array_equal(ingest.scale_16bit(v), np.round(v * 255 / 65535))
    x16 = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 83)
    Image.fromarray(x16).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as img:
        assert img.mode.startswith("I")
        x, notes = ingest.convert_image(img, 1, 28)
    assert "16-bit levels" in notes
    np.testing.assert_array_equal(x[..., 0], ingest.scale_16bit(x16))


def test_centre_crop_geometry() -> None:
    assert ingest.resize_geometry(100, 50, 28) == ((56, 28), (14, 0, 42, 28))
    assert ingest.resize_geometry(50, 100, 28) == ((28, 56), (0, 14, 28, 42))
    assert ingest.resize_geometry(33, 32, 32) == ((33, 32), (0, 0, 32, 32))  # odd excess: right
    assert ingest.resize_geometry(640, 480, 32) == ((43, 32), (5, 0, 37, 32))
    assert ingest.resize_geometry(10, 10, 32) == ((32, 32), (0, 0, 32, 32))  # enlarged
    # no resampling needed (short side already 28): the crop is exactly the centre square
    x = np.zeros((28, 84, 1), np.uint8)
    x[:, 28:56] = 200
    out, notes = ingest.to_size(x, 28)
    assert (out == 200).all() and notes == ["centre-cropped to 28x28 at (28, 0)"]
    out, notes = ingest.to_size(np.full((480, 640, 3), 7, np.uint8), 32)
    assert out.shape == (32, 32, 3) and (out == 7).all()
    assert notes[0] == "resized 640x480->43x32 (bilinear)"


def test_other_modes() -> None:
    bilevel = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    x, notes = ingest.convert_image(bilevel, 1, 2)
    assert x[..., 0].tolist() == [[0, 255], [255, 0]] and notes == "1-bit->L"
    floats = Image.fromarray(np.array([[-3.0, 100.4, 300.0]], np.float32), "F")
    img, notes = ingest.to_8bit(floats)
    assert np.asarray(img).tolist() == [[0, 100, 255]] and "F->L" in notes[0]
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    img, notes = ingest.to_8bit(cmyk)
    assert img.mode == "RGB" and notes == ["CMYK->RGB"]
    opaque_palette = Image.fromarray(np.zeros((4, 4), np.uint8), "P")
    assert ingest.to_8bit(opaque_palette)[0].mode == "RGB"


def test_glow_companions_add_the_ratio_and_waic(smoke_model, image_folder: Path, tmp_path: Path,
                                                data_root: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With the Glow's background model and ensemble in the build, the command reports their
    AUROCs and writes their columns, computed as in the book (smoke-sized companions)."""
    monkeypatch.setattr(background, "MU_GRID", (0.2,))
    monkeypatch.setattr(background, "L2_GRID", (0.0,))
    monkeypatch.setattr(background, "MU_EXTENSION", ())
    bundle = ensemble.companions("glow", "fashion_mnist", "smoke", data_root, allow_training=True)
    out = tmp_path / "scores.csv"
    code, stdout, _ = score([str(image_folder), "--out", str(out)], capsys, data_root)
    assert code == 0, stdout
    assert "likelihood ratio" in stdout and "WAIC" in stdout
    assert "left out" not in stdout
    frame = pd.read_csv(out)
    assert list(frame.columns)[-2:] == ["likelihood_ratio", "waic"]
    # recompute from the models: s = log p_bg - log p; -WAIC over seeds 0, 1, 2
    images = torch.from_numpy(ingest.load_path(image_folder, 1, 28, 255).images)
    images = images.permute(0, 3, 1, 2).contiguous()
    own = evaluate(smoke_model.model, images)["log_px"]
    bg = evaluate(bundle.background.model, images)["log_px"]
    np.testing.assert_allclose(frame["likelihood_ratio"], bg - own, rtol=1e-6, atol=1e-3)
    members = np.stack([own] + [evaluate(m.model, images)["log_px"] for m in bundle.members])
    np.testing.assert_allclose(frame["waic"], scores.waic_score(members), rtol=1e-6, atol=1e-3)
