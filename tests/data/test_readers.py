"""read_image: values, layouts and orientation for every format, and one-line errors on bad files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_windowing
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medexplain.data import read_image
from medexplain.errors import MedexplainError

RNG = np.random.default_rng(0)


def assert_single_line_error(path: Path, call, *words: str) -> str:
    """``call()`` raises a MedexplainError on one line that names ``path`` and contains every word."""
    with pytest.raises(MedexplainError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message.lower(), message
    return message


# --- Pillow formats -------------------------------------------------------------------------------------------


def test_png_8bit_grey_keeps_values(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, size=(5, 7), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == torch.float32 and image.shape == (1, 5, 7)
    assert torch.equal(image[0], torch.from_numpy(pixels.astype(np.float32)))


def test_png_16bit_keeps_values_above_255(tmp_path: Path) -> None:
    pixels = np.array([[0, 300, 4095], [40000, 65535, 1]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")  # really written as 16-bit
    assert torch.equal(read_image(tmp_path / "a.png")[0], torch.from_numpy(pixels.astype(np.float32)))


def test_rgb_is_channels_first_and_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, size=(4, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    expected = torch.from_numpy(rgba[..., :3].astype(np.float32)).permute(2, 0, 1)
    assert torch.equal(read_image(tmp_path / "rgb.png"), expected)
    assert torch.equal(read_image(tmp_path / "rgba.png"), expected)


def test_palette_images_become_grey_or_rgb_values(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    grey = Image.fromarray(indices, mode="P")
    grey.putpalette([0, 0, 0, 100, 100, 100, 250, 250, 250])
    grey.save(tmp_path / "grey.png")
    assert torch.equal(read_image(tmp_path / "grey.png"), torch.tensor([[[0.0, 100.0], [250.0, 100.0]]]))
    colour = Image.fromarray(indices, mode="P")
    colour.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    colour.save(tmp_path / "colour.png")
    image = read_image(tmp_path / "colour.png")
    assert image.shape == (3, 2, 2)
    assert torch.equal(image[:, 0, 1], torch.tensor([255.0, 0.0, 0.0]))
    assert torch.equal(image[:, 1, 0], torch.tensor([0.0, 0.0, 255.0]))


def test_jpeg_matches_pillow_decode(tmp_path: Path) -> None:
    ramp = np.add.outer(np.arange(16) * 8, np.arange(24) * 4)
    rgb = np.stack([ramp, ramp[::-1], 255 - ramp], axis=-1).clip(0, 255).astype(np.uint8)  # smooth: JPEG keeps it
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=90)
    decoded = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB")).astype(np.float32)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (3, 16, 24)
    assert torch.equal(image, torch.from_numpy(decoded).permute(2, 0, 1))
    assert (image - torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)).abs().mean() < 10  # lossy but close


def test_tiff_float_and_multipage_stack(tmp_path: Path) -> None:
    values = RNG.normal(size=(5, 6)).astype(np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    assert torch.equal(read_image(tmp_path / "f.tif")[0], torch.from_numpy(values))
    signed = np.array([[-1024, 0], [3071, -32768]], dtype=np.int16)  # CT-like signed 16-bit TIFF
    Image.fromarray(signed).save(tmp_path / "s.tif")
    assert torch.equal(read_image(tmp_path / "s.tif")[0], torch.from_numpy(signed.astype(np.float32)))
    pages = [RNG.integers(0, 256, size=(5, 6), dtype=np.uint8) for _ in range(3)]
    Image.fromarray(pages[0]).save(
        tmp_path / "stack.tiff", save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]]
    )
    stack = read_image(tmp_path / "stack.tiff")
    assert stack.shape == (1, 3, 5, 6)
    assert torch.equal(stack[0], torch.from_numpy(np.stack(pages).astype(np.float32)))


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` 8-bit grey pixels, followed by a few bytes of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height", [(70000, 1), (20000, 20000), (60000, 60000)])
def test_absurd_png_header_is_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))
    # The file holds no pixels: an error about size (not truncation) proves the header was checked first.
    message = assert_single_line_error(path, lambda: read_image(path), "large")
    assert "truncated" not in message


def test_truncated_png_is_an_error(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, size=(64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    assert_single_line_error(tmp_path / "a.png", lambda: read_image(tmp_path / "a.png"), "truncated")


def test_garbage_and_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"not an image at all")
    assert_single_line_error(tmp_path / "a.png", lambda: read_image(tmp_path / "a.png"), "corrupt")
    (tmp_path / "a.xyz").write_bytes(b"whatever")
    assert_single_line_error(tmp_path / "a.xyz", lambda: read_image(tmp_path / "a.xyz"), "unknown image file type")
    assert_single_line_error(tmp_path / "none.png", lambda: read_image(tmp_path / "none.png"), "not found")


# --- .npy -----------------------------------------------------------------------------------------------------


def test_npy_layouts(tmp_path: Path) -> None:
    volume = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "v.npy", volume)
    assert torch.equal(read_image(tmp_path / "v.npy"), torch.from_numpy(volume)[None])  # (D,H,W) -> volume
    assert torch.equal(read_image(tmp_path / "v.npy", spatial_dims=2), torch.from_numpy(volume))  # (C,H,W)
    np.save(tmp_path / "g.npy", volume[0].astype(np.int16))
    assert torch.equal(read_image(tmp_path / "g.npy"), torch.from_numpy(volume[0].astype(np.int16)).float()[None])
    four = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "c.npy", four)
    assert torch.equal(read_image(tmp_path / "c.npy"), torch.from_numpy(four))
    np.save(tmp_path / "line.npy", np.zeros(5))
    assert_single_line_error(tmp_path / "line.npy", lambda: read_image(tmp_path / "line.npy"), "not an image")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npy_with_nan_or_inf_is_an_error(tmp_path: Path, bad: float) -> None:
    array = np.ones((4, 4), dtype=np.float32)
    array[1, 2] = bad
    np.save(tmp_path / "a.npy", array)
    assert_single_line_error(tmp_path / "a.npy", lambda: read_image(tmp_path / "a.npy"), "nan or infinite")


def test_npy_never_unpickles(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_single_line_error(tmp_path / "obj.npy", lambda: read_image(tmp_path / "obj.npy"), "not a readable")


def test_npy_truncated_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((32, 32), dtype=np.float32))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[:200])
    assert_single_line_error(tmp_path / "a.npy", lambda: read_image(tmp_path / "a.npy"))


# --- DICOM ----------------------------------------------------------------------------------------------------


def write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **tags) -> Path:
    """A minimal CT DICOM file with ``stored`` pixel values ((H, W) or (F, H, W)) and extra ``tags``."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CT"
    dataset.set_pixel_data(stored, photometric, bits)
    for name, value in tags.items():
        setattr(dataset, name, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


STORED = np.array([[0, 1000, 1024], [2048, 3000, 4095]], dtype=np.uint16)


def test_dicom_rescale_gives_hounsfield_units(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "ct.dcm", STORED, RescaleSlope=1, RescaleIntercept=-1024)
    expected = torch.tensor([[-1024.0, -24.0, 0.0], [1024.0, 1976.0, 3071.0]])
    assert torch.equal(read_image(path), expected[None])
    half = write_dicom(tmp_path / "half.dcm", STORED, RescaleSlope="0.5", RescaleIntercept="10")
    assert torch.equal(read_image(half)[0], torch.from_numpy(STORED.astype(np.float32)) * 0.5 + 10)


def test_dicom_without_rescale_and_signed_pixels(tmp_path: Path) -> None:
    signed = np.array([[-1000, -1], [0, 2000]], dtype=np.int16)
    path = write_dicom(tmp_path / "s.dcm", signed, bits=16)
    assert torch.equal(read_image(path)[0], torch.from_numpy(signed.astype(np.float32)))


def test_dicom_monochrome1_is_inverted_within_the_stored_range(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "m1.dcm", STORED, photometric="MONOCHROME1")
    assert torch.equal(read_image(path)[0], torch.from_numpy(4095.0 - STORED.astype(np.float32)))
    rescaled = write_dicom(tmp_path / "m1r.dcm", STORED, photometric="MONOCHROME1", RescaleSlope=2, RescaleIntercept=-5)
    # modality range [-5, 2 * 4095 - 5]; mirrored: low + high - value
    expected = (-5.0 + 2 * 4095 - 5) - (2.0 * torch.from_numpy(STORED.astype(np.float32)) - 5)
    assert torch.equal(read_image(rescaled)[0], expected)


def test_dicom_window_matches_pydicom_voi_and_hand_values(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "w.dcm", STORED, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=401
    )
    windowed = read_image(path, window=True)[0]
    # Hand values for c=40, w=401 on HU [-1024, -24, 0; 1024, 1976, 3071]: (x - 39.5) / 400 + 0.5, clipped
    expected = torch.tensor([[0.0, (-24 - 39.5) / 400 + 0.5, (0 - 39.5) / 400 + 0.5], [1.0, 1.0, 1.0]])
    assert torch.allclose(windowed, expected, atol=1e-6)
    dataset = pydicom.dcmread(path)
    hu = dataset.pixel_array.astype(np.float64) - 1024
    low, high = apply_windowing(np.array([-1e9, 1e9]), dataset)  # pydicom's output range depends on the tags
    reference = (apply_windowing(hu, dataset) - low) / (high - low)
    assert np.allclose(windowed.numpy(), reference, atol=1e-6)
    inverted = write_dicom(
        tmp_path / "wi.dcm",
        STORED,
        photometric="MONOCHROME1",
        RescaleIntercept=-1024,
        RescaleSlope=1,
        WindowCenter=[40, 400],  # several windows: the first one applies
        WindowWidth=[401, 2000],
    )
    assert torch.allclose(read_image(inverted, window=True)[0], 1 - expected, atol=1e-6)
    plain = write_dicom(tmp_path / "p.dcm", STORED)
    assert_single_line_error(plain, lambda: read_image(plain, window=True), "no windowcenter")


def test_dicom_multiframe_is_a_volume(tmp_path: Path) -> None:
    frames = RNG.integers(0, 4096, size=(4, 3, 5), dtype=np.uint16)
    path = write_dicom(tmp_path / "mf.dcm", frames, RescaleSlope=1, RescaleIntercept=-1024)
    volume = read_image(path)
    assert volume.shape == (1, 4, 3, 5)
    assert torch.equal(volume[0], torch.from_numpy(frames.astype(np.float32)) - 1024)


def test_dicom_rgb_is_channels_first(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", bits=8)
    assert torch.equal(read_image(path), torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1))
    assert_single_line_error(path, lambda: read_image(path, window=True), "greyscale")


def test_dicom_without_pixel_data_is_an_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", STORED)
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path)
    assert_single_line_error(path, lambda: read_image(path), "no pixel data")


def test_dicom_truncated_is_an_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", RNG.integers(0, 4096, size=(64, 64), dtype=np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    assert_single_line_error(path, lambda: read_image(path))
    path.write_bytes(data[:100])
    assert_single_line_error(path, lambda: read_image(path))


def test_dicom_without_extension_is_recognised_by_its_preamble(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IM0001", STORED)
    assert torch.equal(read_image(path)[0], torch.from_numpy(STORED.astype(np.float32)))


# --- NIfTI ----------------------------------------------------------------------------------------------------


def test_nifti_lps_volume_comes_back_in_ras(tmp_path: Path) -> None:
    data = RNG.normal(size=(4, 5, 6)).astype(np.float32)
    # LPS: voxel axes 0 and 1 run towards Left and Posterior, axis 2 towards Superior.
    affine = np.diag([-2.0, -3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "lps.nii.gz")
    volume = read_image(tmp_path / "lps.nii.gz")
    assert volume.shape == (1, 4, 5, 6)
    # Hand-derived: the voxel at (i, j, k) moves to (3 - i, 4 - j, k).
    assert volume[0, 3 - 1, 4 - 2, 3] == data[1, 2, 3]
    assert torch.equal(volume[0], torch.from_numpy(data[::-1, ::-1, :].copy()))
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "lps.nii.gz"))
    assert np.allclose(canonical.affine[:3, :3], np.diag([2.0, 3.0, 4.0]))
    assert torch.equal(volume[0], torch.from_numpy(canonical.get_fdata(dtype=np.float32).copy()))


def test_nifti_permuted_axes_and_scaling(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    # voxel axis 0 -> Superior, axis 1 -> Right, axis 2 -> Anterior
    affine = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    image = nib.Nifti1Image(data, affine)
    image.header.set_slope_inter(2.0, -1.0)
    nib.save(image, tmp_path / "perm.nii")
    volume = read_image(tmp_path / "perm.nii")
    assert volume.shape == (1, 3, 4, 2)  # (R, A, S)
    assert torch.equal(volume[0], torch.from_numpy(np.transpose(data, (1, 2, 0)).astype(np.float32)) * 2 - 1)


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_nifti_orientation_matches_monai_ras(tmp_path: Path) -> None:
    from monai.transforms import LoadImage, Orientation

    data = RNG.normal(size=(4, 5, 6)).astype(np.float32)
    # axis 0 -> Inferior, axis 1 -> Left, axis 2 -> Anterior, with a translation
    affine = np.array([[0.0, -2.0, 0.0, 10.0], [0.0, 0.0, 3.0, -5.0], [-4.0, 0.0, 0.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "oblique.nii.gz")
    loaded = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)(tmp_path / "oblique.nii.gz")
    reference = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(loaded)
    ours = read_image(tmp_path / "oblique.nii.gz")
    assert ours.shape == (1, 5, 6, 4)
    assert torch.equal(ours, torch.as_tensor(reference).as_subclass(torch.Tensor))


def test_nifti_4d_becomes_channels_and_5d_is_refused(tmp_path: Path) -> None:
    data = RNG.normal(size=(3, 4, 5, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, 1.0, 1.0, 1.0])), tmp_path / "t.nii.gz")
    image = read_image(tmp_path / "t.nii.gz")
    assert image.shape == (2, 3, 4, 5)
    assert torch.equal(image, torch.from_numpy(np.moveaxis(data[::-1], -1, 0).copy()))
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 1, 3), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    assert_single_line_error(tmp_path / "v.nii.gz", lambda: read_image(tmp_path / "v.nii.gz"), "5 dimensions")


def test_nifti_single_slice_is_2d(tmp_path: Path) -> None:
    data = RNG.normal(size=(4, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii")
    nib.save(nib.Nifti1Image(data[:, None, :], np.eye(4)), tmp_path / "coronal.nii")
    assert torch.equal(read_image(tmp_path / "a.nii"), torch.from_numpy(data)[None])
    assert torch.equal(read_image(tmp_path / "coronal.nii"), torch.from_numpy(data)[None])


def test_nifti_nan_and_truncated_are_errors(tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    assert_single_line_error(tmp_path / "nan.nii", lambda: read_image(tmp_path / "nan.nii"), "nan")
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4)), tmp_path / "cut.nii")
    raw = (tmp_path / "cut.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[:1000])
    assert_single_line_error(tmp_path / "cut.nii", lambda: read_image(tmp_path / "cut.nii"))
