"""Bad input and faults through the command line: one line naming the file or value, exit code 2, and the output
folder exactly as it was before the run (absent, or the previous complete state)."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import zlib
from pathlib import Path

import nibabel
import numpy as np
import pytest
from tests.faults.conftest import SIZE, copy_of, files, write_npy_dataset

from medexplain import files as files_module
from medexplain.cli import main
from medexplain.data.writers import write_manifest


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _replace_image(data: Path, suffix: str, content: bytes) -> str:
    """Put ``content`` in place of the fourth image (a new file with ``suffix``); returns its name."""
    rows = [dict(zip(["image", "split", "label", "mask_lesion"], line.split(","), strict=True))
            for line in (data / "manifest.csv").read_text().splitlines()[1:]]  # fmt: skip
    name = f"img03{suffix}"
    (data / name).write_bytes(content)
    rows[3]["image"] = name
    write_manifest(data, rows)
    return name


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _absurd_npy() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }"
    header += " " * (63 - len(header) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def _absurd_nifti() -> bytes:
    image = nibabel.Nifti1Image(np.zeros((2, 2, 2), dtype=np.float32), np.eye(4))
    image.header.set_data_shape((30000, 30000, 30000))
    return image.header.binaryblock + b"\0" * 4


BAD_FILES = {
    "corrupt png": (".png", b"\x89PNG\r\n\x1a\n garbage", "img03.png"),
    "png header too large": (".png", _png_header_only(100000, 100000), "large"),
    "nan in npy": (".npy", _npy_bytes(np.full((SIZE, SIZE), np.nan, dtype=np.float32)), "NaN"),
    "truncated npy": (".npy", _npy_bytes(np.zeros((SIZE, SIZE), dtype=np.float32))[:90], "img03.npy"),
    "npy header too large": (".npy", _absurd_npy(), "large"),
    "nifti header too large": (".nii", _absurd_nifti(), "large"),
}


def _explain(run: Path, data: Path, out: Path, method: str, *extra: str) -> int:
    return main(["explain", "--model", str(run), "--data", str(data), "--out", str(out), "--method", method,
                 "--batch-size", "4", "--no-progress", *extra])  # fmt: skip


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line on stderr (warnings before it, e.g. of a tiny validation split, are lines of their own)."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("medexplain: warn")]
    assert len(lines) == 1 and lines[0].startswith("medexplain: error: "), lines
    return lines[0]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_fails_explain_and_leaves_the_folder_as_it_was(case, run, data, tmp_path, capsys) -> None:
    suffix, content, named = BAD_FILES[case]
    bad = copy_of(data, tmp_path / "data")
    name = _replace_image(bad, suffix, content)
    fresh, previous = tmp_path / "fresh", tmp_path / "previous"
    assert _explain(run, bad, fresh, "saliency") == 2
    line = _one_error_line(capsys)
    assert name in line and named in line, line
    assert not fresh.exists()  # nothing, not an index without items
    assert _explain(run, data, previous, "saliency") == 0  # a complete earlier run on the good data ...
    capsys.readouterr()
    before = files(previous)
    (previous / "index.json").write_text((previous / "index.json").read_text().replace(str(data), str(bad)))
    before = files(previous)
    assert _explain(run, bad, previous, "saliency,gradcam") == 2  # ... then a run that fails half-way
    _one_error_line(capsys)
    assert files(previous) == before  # the previous complete state, byte for byte


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "saliency", "--target", "7"], "out of range for a model with 2 outputs"),
        (["--method", "gradcam", "--layer", "nope"], "model has no layer 'nope'; valid layers: conv1"),
        (["--method", "saliency", "--batch-size", "0"], "--batch-size must be positive, got 0"),
        (["--method", "saliency", "--max-items", "0"], "--max-items must be positive, got 0"),
    ],
)
def test_a_bad_request_fails_explain_and_writes_nothing(extra, message, run, data, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["explain", "--model", str(run), "--data", str(data), "--out", str(out), "--no-progress", *extra]
    assert main(args) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_a_model_that_does_not_fit_the_data_is_named_with_the_data(run, tmp_path, capsys) -> None:
    rgb = write_npy_dataset(tmp_path / "rgb", n=4, channels=3)
    assert _explain(run, rgb, tmp_path / "out", "saliency") == 2
    line = _one_error_line(capsys)
    assert f"{run}: the model expects 1-channel images; {rgb} has 3-channel images" in line
    assert not (tmp_path / "out").exists()
    assert _explain(run, write_npy_dataset(tmp_path / "grey", n=4), tmp_path / "maps", "saliency") == 0
    capsys.readouterr()
    args = ["evaluate", "--explanations", str(tmp_path / "maps"), "--data", str(rgb), "--model", str(run),
            "--metrics", "deletion-auc", "--out", str(tmp_path / "scores"), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "the model expects 1-channel images" in _one_error_line(capsys)
    assert not (tmp_path / "scores").exists()


def test_mixed_sizes_ask_for_size_and_size_resizes(run, tmp_path, capsys) -> None:
    data = write_npy_dataset(tmp_path / "data", n=4)
    np.save(data / "img02.npy", np.zeros((40, 40), dtype=np.float32))
    (data / "masks" / "img02.png").unlink()
    manifest = (data / "manifest.csv").read_text().replace("masks/img02.png", "")
    (data / "manifest.csv").write_text(manifest)
    assert _explain(run, data, tmp_path / "out", "saliency") == 2
    assert "images of different sizes in one batch" in (line := _one_error_line(capsys)) and "--size" in line
    assert _explain(run, data, tmp_path / "out", "saliency", "--size", "32") == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["size"] == 32 and len(index["items"]) == 4


def test_a_continued_run_with_fewer_methods_lists_only_complete_methods(run, data, tmp_path) -> None:
    out = tmp_path / "out"
    assert _explain(run, data, out, "saliency,gradcam") == 0
    index = json.loads((out / "index.json").read_text())
    for item in index["items"][6:]:  # an earlier, interrupted run left gradcam half done
        (out / item["maps"]["gradcam"]).unlink()
    (out / ".progress.json").write_text(json.dumps(index))
    (out / "index.json").unlink()
    assert _explain(run, data, out, "saliency") == 0
    index = json.loads((out / "index.json").read_text())
    assert list(index["methods"]) == ["saliency"]
    assert all(list(item["maps"]) == ["saliency"] for item in index["items"])
    assert not (out / ".progress.json").exists()


def test_evaluate_refuses_a_folder_without_items_or_unfinished(run, data, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.json").write_text(json.dumps({"format": "medexplain-explanations/1", "methods": {}, "items": []}))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / ".progress.json").write_text("{}")
    for folder, message in ((empty, "holds no explained items"), (unfinished, "has not finished")):
        args = ["evaluate", "--explanations", str(folder), "--data", str(data), "--out", str(tmp_path / "scores"),
                "--no-progress"]  # fmt: skip
        assert main(args) == 2
        assert message in _one_error_line(capsys)
        assert not (tmp_path / "scores").exists()


def test_undefined_scores_are_reported_apart_from_empty_masks(run, data, tmp_path, capsys) -> None:
    maps = tmp_path / "maps"
    assert _explain(run, data, maps, "saliency") == 0
    index = json.loads((maps / "index.json").read_text())
    for item in index["items"][:3]:  # three all-zero maps: no relevance to locate
        np.save(maps / item["maps"]["saliency"], np.zeros((1, SIZE, SIZE), dtype=np.float32))
    capsys.readouterr()
    args = ["evaluate", "--explanations", str(maps), "--data", str(data), "--metrics", "relevance-mass", "--out",
            str(tmp_path / "scores"), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "3 scores are NaN because the metric is undefined for the map" in err
    assert "mask is empty" not in err


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("command", ["explain", "evaluate", "train"])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_nothing(failure, command, run, data, tmp_path, capsys,
                                                                 monkeypatch) -> None:  # fmt: skip
    maps = tmp_path / "maps"
    assert _explain(run, data, maps, "saliency") == 0
    capsys.readouterr()
    writes = []
    real_replace = os.replace

    def replace(source, target):  # every atomic write ends in a rename: the third one finds the disk full
        writes.append(target)
        if len(writes) == 3:
            raise OSError(failure, os.strerror(failure))
        real_replace(source, target)

    monkeypatch.setattr(files_module.os, "replace", replace)
    out = tmp_path / "out"
    args = {
        "explain": ["explain", "--model", str(run), "--data", str(data), "--method", "saliency", "--batch-size", "2"],
        "evaluate": ["evaluate", "--explanations", str(maps), "--data", str(data), "--metrics", "gini",
                     "--batch-size", "2"],
        "train": ["train", "--model", "bagnet9-light", "--data", str(data), "--epochs", "3", "--batch-size", "4",
                  "--size", str(SIZE), "--model-args", '{"width": 4}'],
    }[command]  # fmt: skip
    if command == "train":  # a training set: the same images, labelled train/val
        data = Path(args[args.index("--data") + 1])
        train_data = copy_of(data, tmp_path / "train-data")
        manifest = (train_data / "manifest.csv").read_text().splitlines()
        manifest[1:] = [line.replace(",test,", ",train," if i % 3 else ",val,") for i, line in enumerate(manifest[1:])]
        (train_data / "manifest.csv").write_text("\n".join(manifest) + "\n")
        args[args.index("--data") + 1] = str(train_data)
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert os.strerror(failure) in line and str(tmp_path) in line, line
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing partial, no temporary left beside


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_respect_the_umask(umask, run, data, tmp_path) -> None:
    previous = os.umask(umask)
    try:
        assert _explain(run, data, tmp_path / "maps", "saliency") == 0
    finally:
        os.umask(previous)
    index = tmp_path / "maps" / "index.json"
    some_map = next((tmp_path / "maps" / "maps" / "saliency").iterdir())
    for path in (index, some_map):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_a_training_split_of_one_image_is_refused_with_the_reason(tmp_path, capsys) -> None:
    data = write_npy_dataset(tmp_path / "data", n=3)
    manifest = (data / "manifest.csv").read_text().splitlines()
    manifest[1] = manifest[1].replace(",test,", ",train,")
    manifest[2] = manifest[2].replace(",test,", ",val,")
    (data / "manifest.csv").write_text("\n".join(manifest) + "\n")
    args = ["train", "--model", "bagnet9-light", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs",
            "1", "--no-progress", "--model-args", '{"width": 4}']  # fmt: skip
    assert main(args) == 2
    assert "the training split has 1 image; training needs at least two" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()
