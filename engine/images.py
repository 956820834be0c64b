"""Reading any image a person might open into one form: an RGB uint8 array, with clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = str | Path | bytes | Image.Image | np.ndarray

# The one pixel limit of the engine, checked from the file's header before any pixel is decoded: 64 MP
# (8000 x 8000) covers every benchmark image and phone photo, while a run on it (RGB, masks, overlay) stays
# within a few GB. Pillow's own bomb guard is replaced by this bound; `set_max_pixels` (the CLI's
# --max-pixels, in megapixels) raises or lowers it for the whole process.
MEGAPIXEL = 1_000_000
# The longest side read. SAM's resize and the policy's frame build per-axis weights: a 1 x 60,000,000 PNG
# (69 bytes, under the pixel limit) took 12.7 GB. JPEG's own limit; a panorama within the pixel limit fits.
MAX_SIDE = 65_535
DEFAULT_MAX_PIXELS = 64 * MEGAPIXEL
_limit = {"pixels": DEFAULT_MAX_PIXELS}


def set_max_pixels(pixels: int) -> None:
    """The engine's pixel limit for every image this process reads from here on."""
    if not (isinstance(pixels, int) and pixels > 0):
        raise ValueError(f"the pixel limit must be a positive whole number, got {pixels!r}")
    _limit["pixels"] = pixels


def max_pixels() -> int:
    return _limit["pixels"]


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (and 32-bit integer) greyscale: scale the full range to 8 bits, not clip at 255.
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() <= 65535 else float(arr.max())
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max() if np.isfinite(arr).all() and arr.max() > 1.0 else 1.0
        arr = np.clip(np.nan_to_num(arr) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    # RGBA/LA: the alpha channel is dropped (as the reference pipelines do), CMYK/YCbCr/L converted.
    return image.convert("RGB")


def load_image(source: ImageSource, *, exif: bool = True, max_pixels: int | None = None,
               downscale: bool = False) -> np.ndarray:
    """Decode `source` into an HxWx3 uint8 RGB array.

    exif: apply the EXIF orientation (what a photo viewer shows). Benchmark readers choose what their
    reference did: OpenCV (LISA) applies it, the Hugging Face copies (PIL) do not.
    downscale: a JPEG above the pixel limit is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's draft mode:
    the full image is never in memory) when that fits, instead of being refused. The caller compares the
    array's size with `image_size(source)` to tell the user; benchmark readers never downscale.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    limit = max_pixels or _limit["pixels"]
    name = _describe(source)
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            if isinstance(source, (str, Path)) and Path(source).is_dir():
                raise ImageError(f"{name} is a folder, not an image.")
            if isinstance(source, (str, Path)) and not Path(source).is_file():
                if Path(source).exists():  # a FIFO, a device, a socket: reading it could block or never end
                    raise ImageError(f"{name} is not a regular file (a pipe, device or socket); give an image file.")
                raise ImageError(f"Image not found: {name}. Check the path.")
            if isinstance(source, (str, Path)) and Path(source).suffix.lower() in (".svg", ".svgz"):
                raise ImageError(f"{name} is an SVG drawing, which has no pixels to segment; export it as PNG first.")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = _open_header(io.BytesIO(source) if isinstance(source, bytes) else source)
        width, height = image.size
        if width * height > limit and downscale and image.format == "JPEG":
            scale = next((k for k in (2, 4, 8) if -(-width // k) * -(-height // k) <= limit), None)
            if scale is not None:
                image.draft("RGB", (-(-width // scale), -(-height // scale)))
                width, height = image.size
        if width * height > limit:
            raise ImageError(
                f"Image {name} is {width}x{height} ({width * height / 1e6:.3g} MP), above the limit of "
                f"{limit / 1e6:.3g} MP. Downscale it first, or raise the limit (--max-pixels)."
            )
        if max(width, height) > MAX_SIDE:
            raise ImageError(
                f"Image {name} is {width}x{height}: a side over {MAX_SIDE:,} pixels costs the models' resizing "
                "memory in proportion to it, whatever the pixel count. Crop or downscale it first.")
        if width == 0 or height == 0:
            raise ImageError(f"Image {name} is empty ({width}x{height}).")
        _check_decode_memory(name, width, height, len(image.getbands()))
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max(limit, old_limit or 0)
        try:
            image.load()
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
        if exif:
            image = ImageOps.exif_transpose(image)
        return np.ascontiguousarray(np.asarray(_to_rgb(image), dtype=np.uint8))
    except ImageError:
        raise
    except UnidentifiedImageError:  # Pillow's text names its file object (<_io.BytesIO object at 0x...>)
        raise ImageError(f"Could not read image {name}: not an image format this reads. "
                         "Is it a complete PNG, JPEG, BMP, TIFF or WebP file?") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"Could not read image {name}: {exc}. Is it a complete PNG, JPEG, BMP, TIFF or WebP file?") from exc


def _open_header(fp) -> Image.Image:
    """Image.open reads the header only; with Pillow's bomb guard off there, so that the engine's own
    limit (checked next, before decoding) decides and names itself, whatever Pillow's default."""
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(fp)
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"An image array must be HxW, HxWx3 or HxWx4; got shape {arr.shape}.")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _check_decode_memory(name: str, width: int, height: int, bands: int) -> None:
    """Refuse before decoding an image whose decoded forms (the file's own bands, its RGB conversion and
    the array made from it) exceed the memory this process can have: a 1 MB PNG can hold 400 MP."""
    from .memory import available_memory

    need = width * height * (max(bands, 1) + 3 + 3)
    available = available_memory()
    if available is not None and need > available:
        raise ImageError(f"Image {name} is {width}x{height}: decoding it needs {need / 2**30:.1f} GiB, more than the "
                         f"{available / 2**30:.1f} GiB this process can have. Downscale it first, or run it where "
                         "more memory is free.")


def image_size(source: ImageSource, *, exif: bool = True) -> tuple[int, int]:
    """(width, height) without decoding the pixels where the format allows."""
    if isinstance(source, np.ndarray):
        return int(source.shape[1]), int(source.shape[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = source if isinstance(source, Image.Image) else Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        width, height = image.size
        if exif and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
            width, height = height, width
        return width, height
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"Could not read image {_describe(source)}: {exc}") from exc
