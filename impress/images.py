"""Image decoding and validation with Pillow only: the API checks uploads with it before anything is
queued, and the engine decodes with the very same function, so what passes one passes the other."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .contract import ErrorCode

# The formats accepted everywhere (API, CLI, engine), and the file suffixes that name them.
FORMAT_SUFFIXES = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "WEBP": (".webp",), "BMP": (".bmp",),
                   "TIFF": (".tif", ".tiff"), "GIF": (".gif",)}
SUPPORTED_FORMATS = tuple(FORMAT_SUFFIXES)
IMAGE_SUFFIXES = tuple(suffix for suffixes in FORMAT_SUFFIXES.values() for suffix in suffixes)


class ImageRejected(ValueError):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class DecodedImage:
    rgb: np.ndarray              # H x W x 3 uint8, EXIF orientation applied
    alpha: np.ndarray | None     # H x W uint8, kept aside and re-attached to the output
    format: str

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode an upload fully (a truncated file fails here, not in a worker) or raise ImageRejected."""
    if len(data) > max_bytes:
        raise ImageRejected(ErrorCode.payload_too_large, f"image is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise ImageRejected(ErrorCode.image_decode_failed, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageRejected(ErrorCode.unsupported_image_format,
                                    f"format {fmt} is not supported; send one of {', '.join(SUPPORTED_FORMATS)}")
            if img.width * img.height > max_pixels:
                raise ImageRejected(ErrorCode.image_too_many_pixels,
                                    f"image is {img.width}x{img.height} = {img.width * img.height} pixels; "
                                    f"the limit is {max_pixels}")
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(ErrorCode.image_too_many_pixels, str(exc)) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageRejected(ErrorCode.unsupported_image_format,
                            f"not a recognised image; send one of {', '.join(SUPPORTED_FORMATS)}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(ErrorCode.image_decode_failed, f"image could not be decoded: {exc}") from exc
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        return DecodedImage(rgb=np.ascontiguousarray(rgba[..., :3]), alpha=rgba[..., 3].copy(), format=fmt)
    return DecodedImage(rgb=np.asarray(img.convert("RGB")).copy(), alpha=None, format=fmt)


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    """8-bit RGB(A) PNG."""
    img = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        img.putalpha(Image.fromarray(alpha, "L"))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# Pillow's own bomb guard stays on, set just above our limit so ours speaks first.
def set_pillow_pixel_guard(max_pixels: int) -> None:
    Image.MAX_IMAGE_PIXELS = max_pixels + 1
