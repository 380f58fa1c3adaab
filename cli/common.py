"""What several commands share: settings, decoding image files, loading the VAE, printing errors, the
progress bar long work reports to."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from impress.images import DecodedImage, ImageRejected, decode_image, set_pillow_pixel_guard
from impress.settings import Settings


class CommandFailed(Exception):
    """A user error already explained in its message; the command exits with `code`."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def decode_files(paths: list, settings: Settings) -> list[DecodedImage]:
    """The decoded images, or CommandFailed naming the file that failed."""
    set_pillow_pixel_guard(settings.max_pixels)
    images = []
    for path in paths:
        try:
            images.append(decode_image(Path(path).read_bytes(), max_bytes=settings.max_upload_bytes,
                                       max_pixels=settings.max_pixels))
        except (OSError, ImageRejected) as exc:
            raise CommandFailed(f"{path}: {getattr(exc, 'message', exc)}") from exc
    return images


def load_vae_or_fail(name: str, device: Optional[str], settings: Settings):
    """(vae, identity) on the chosen device, or CommandFailed(code 3) saying what is missing."""
    from worker.engine.models import ModelUnavailable, load_vae, resolve_device

    try:
        return load_vae(name, resolve_device(device or settings.device))
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc


class BarReporter:
    """The engine's progress reporter (impress.progress.Reporter) as a tqdm bar: `with BarReporter("purify")
    as reporter: run(..., reporter=reporter)`. Never cancels (Ctrl-C stops the command)."""

    def __init__(self, desc: str, unit: str = "step"):
        from tqdm import tqdm   # here: the API's image has no tqdm

        self.bar = tqdm(total=0, desc=desc, unit=unit)

    def advance(self, step: int, total: int, loss: Optional[float] = None) -> None:
        self.bar.total = total
        self.bar.update(step - self.bar.n)
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.5f}")

    def __enter__(self) -> "BarReporter":
        return self

    def __exit__(self, *_) -> None:
        self.bar.close()
