"""ImageStore: images referenced by content-hash handles.

Graphs, tools and LLMs pass images around as short handles (``img_3fa2c1d9e0b7a6f1``); the pixels
live in the store (in memory and on disk, so a handle stays valid across processes: a chat thread
resumed tomorrow still resolves its images). Every image entering the store is checked against the
configured limits, EXIF-rotated upright and converted to RGB.

Two doors lead in. :meth:`ImageStore.put` is for the local user (the CLI, Python code, datasets):
it takes file paths. :meth:`ImageStore.put_from_client` is for what a remote client sends (the HTTP
API, MCP): ``data:`` URLs, ``http(s)`` URLs only when ``[images] allow_remote`` is on, and file
paths only under ``[images] allowed_roots`` when the caller permits files at all. Its error
messages never say whether a refused path exists, how large a file is, or echo the path.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import threading
import urllib.error
import urllib.request
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from mmagents._config import ImageLimits
from mmagents.errors import (
    ImageError,
    ImageSourceRefusedError,
    ImageTooLargeError,
    RemoteImageRefusedError,
    UnknownHandleError,
)

if TYPE_CHECKING:
    from PIL import Image

    from mmagents._config import Config

__all__ = ["HANDLE_PATTERN", "ImageStore", "default_store", "is_handle"]

HANDLE_PATTERN = re.compile(r"^img_[0-9a-f]{16}$")
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,(?P<data>.+)$", re.DOTALL)


def is_handle(value: object) -> bool:
    """True when ``value`` looks like an image handle."""
    return isinstance(value, str) and bool(HANDLE_PATTERN.match(value))


class ImageStore:
    """Content-addressed image store with input limits.

    Args:
        root: Folder where normalised PNGs are kept; ``None`` keeps images in memory only.
        limits: Pixel and byte limits, and whether remote URLs may be fetched.
        memory_items: How many decoded images to keep in memory at most (LRU); the bytes they
            hold are bounded too, by ``limits.memory_bytes``. Working copies for roles that
            shrink images anyway (:meth:`get` with ``min_side``) count against both.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        limits: ImageLimits | None = None,
        *,
        memory_items: int = 64,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.limits = limits or ImageLimits()
        self._memory: OrderedDict[str, Image.Image] = OrderedDict()
        self._memory_items = memory_items
        self._memory_bytes = 0
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------------

    def put(self, source: str | Path | bytes | Image.Image) -> str:
        """Add an image and return its handle.

        Args:
            source: A file path, raw bytes, a ``data:image/...;base64,`` URL, an ``http(s)://`` URL
                (only when ``allow_remote``), an existing handle, or a PIL image.

        Raises:
            ImageError: unreadable or corrupt image data.
            ImageTooLargeError: the image exceeds ``max_pixels`` or ``max_bytes``.
            RemoteImageRefusedError: a URL was given while remote images are disabled.
        """
        from PIL import Image

        if isinstance(source, str) and is_handle(source):
            self.get(source)  # validates that it exists
            return source
        if isinstance(source, Image.Image):
            # The caller's object: normalised on a copy, so the store never shares (or rotates)
            # an image someone else may still change.
            image = self._normalise(source.copy())
        else:
            image = self._normalise(self._decode(self._read_bytes(source)))
        handle = self._handle_of(image)
        with self._lock:
            self._remember(handle, image)
        if self.root is not None:
            path = self.path(handle)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                # A temporary name of this writer's own (other stores, threads or processes may
                # be writing the same new image now), then an atomic rename: a killed process
                # never leaves a half-written image, and the last identical rename wins.
                tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
                try:
                    image.save(tmp, format="PNG")
                    tmp.replace(path)
                finally:
                    tmp.unlink(missing_ok=True)
        return handle

    def put_from_client(self, source: str, *, files: bool = False) -> str:
        """Add an image a remote client sent and return its handle.

        Args:
            source: A ``data:image/...;base64,`` URL, an ``http(s)://`` URL (only when
                ``allow_remote``), an existing handle, or (only with ``files``) a path under one
                of ``[images] allowed_roots``.
            files: Whether file paths may be named at all (MCP: yes, under the roots; the HTTP
                API: never).

        Raises:
            ImageError: the source is refused, unreadable or corrupt; the message names no path
                and no file size.
            ImageTooLargeError: the image exceeds the limits.
            RemoteImageRefusedError: a URL while remote images are disabled.
        """
        if not isinstance(source, str):
            raise ImageSourceRefusedError("an image must be given as a string (a data: URL)")
        if is_handle(source) or _DATA_URL.match(source):
            return self.put(source)
        if source.startswith(("http://", "https://")):
            return self.put(self._fetch(source))
        if not files:
            raise ImageSourceRefusedError(
                "images must be sent as data:image/...;base64 URLs"
                + (" or http(s) URLs" if self.limits.allow_remote else "")
                + "; file paths on the server are not accepted"
            )
        path = self._allowed_path(source)
        try:
            data = self._read_file(path)
        except ImageError:
            raise ImageError("image file not found or unreadable under the allowed roots") from None
        return self.put(data)

    def _allowed_path(self, source: str) -> Path:
        """``source`` resolved (symlinks too) when it lies under an allowed root, else refused
        with one message whatever the path is: no existence or size oracle."""
        refused = ImageSourceRefusedError(
            "file paths are accepted only under [images] allowed_roots"
            if self.limits.allowed_roots
            else "file paths are not accepted: no [images] allowed_roots are configured"
        )
        if "\x00" in source or not os.path.isabs(source):
            raise refused
        path = Path(os.path.realpath(source))
        for root in self.limits.allowed_roots:
            if path.is_relative_to(os.path.realpath(root)):
                return path
        raise refused

    def _read_file(self, path: Path) -> bytes:
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise ImageError(f"image file not found: {path}")
            if size > self.limits.max_bytes:
                raise ImageTooLargeError(
                    f"{path} is {size} bytes; limit is {self.limits.max_bytes}"
                )
            return path.read_bytes()
        except OSError:
            raise ImageError(f"image file not found or unreadable: {path}") from None

    def _read_bytes(self, source: str | Path | bytes) -> bytes:
        if isinstance(source, bytes):
            data = source
        elif isinstance(source, str) and (match := _DATA_URL.match(source)):
            try:
                data = base64.b64decode(match["data"], validate=False)
            except ValueError as exc:
                raise ImageError(f"invalid base64 in data URL: {exc}") from None
        elif isinstance(source, str) and source.startswith(("http://", "https://")):
            data = self._fetch(source)
        else:
            data = self._read_file(Path(source))
        if len(data) > self.limits.max_bytes:
            raise ImageTooLargeError(
                f"image is {len(data)} bytes; limit is {self.limits.max_bytes}"
            )
        return data

    def _fetch(self, url: str) -> bytes:
        if not self.limits.allow_remote:
            raise RemoteImageRefusedError(
                f"remote images are disabled; set [images] allow_remote = true to fetch {url}"
            )
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                data: bytes = response.read(self.limits.max_bytes + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # URLError, refused connections and timeouts are all OSErrors; a client learns that
            # the fetch failed, not why (that would make the server a port scanner).
            raise ImageError("the remote image could not be fetched") from exc
        if len(data) > self.limits.max_bytes:
            raise ImageTooLargeError(f"remote image is over {self.limits.max_bytes} bytes")
        return data

    def _decode(self, data: bytes) -> Image.Image:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                probe = Image.open(io.BytesIO(data))
                width, height = probe.size  # header only: nothing decoded yet
                if width * height > self.limits.max_pixels:
                    raise ImageTooLargeError(
                        f"image is {width}x{height} = {width * height} pixels; "
                        f"limit is {self.limits.max_pixels}"
                    )
                probe.load()
        except ImageTooLargeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(f"decompression bomb refused: {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"cannot decode image ({len(data)} bytes): {exc}") from None
        return probe

    def _normalise(self, image: Image.Image) -> Image.Image:
        """Upright RGB, modifying ``image`` in place where it can (the store owns it)."""
        from PIL import Image, ImageOps

        if image.width * image.height > self.limits.max_pixels:
            raise ImageTooLargeError(
                f"image is {image.width}x{image.height}; limit is {self.limits.max_pixels} pixels"
            )
        # In place: exif_transpose otherwise returns a full copy even when there is nothing to do.
        ImageOps.exif_transpose(image, in_place=True)
        transparent = image.mode in ("RGBA", "LA") or (
            image.mode == "P" and "transparency" in image.info
        )
        if transparent:
            # Composite transparency on white rather than letting it turn black.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return image if image.mode == "RGB" else image.convert("RGB")

    @staticmethod
    def _handle_of(image: Image.Image) -> str:
        digest = hashlib.sha256()
        digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
        # Hashed in bands of rows: the same bytes as one tobytes() call (so the same handle),
        # without a second full-size copy of the pixels (108 MB for a 6000 x 6000 photo).
        rows = max(1, (4 << 20) // max(1, image.width * len(image.getbands())))
        for top in range(0, image.height, rows):
            band = image.crop((0, top, image.width, min(image.height, top + rows)))
            digest.update(band.tobytes())
        return "img_" + digest.hexdigest()[:16]

    @staticmethod
    def _size_of(image: Image.Image) -> int:
        return image.width * image.height * len(image.getbands())

    def _remember(self, handle: str, image: Image.Image) -> None:
        """Keep ``image`` in the LRU, bounded by count and by ``limits.memory_bytes``.

        A store with a disk ``root`` can always re-read an evicted image, so one over the whole
        budget is not kept at all; a memory-only store keeps at least its newest image (its only
        copy).
        """
        if handle in self._memory:
            self._memory.move_to_end(handle)
            return
        size = self._size_of(image)
        if self.root is not None and size > self.limits.memory_bytes:
            return
        self._memory[handle] = image
        self._memory_bytes += size
        while len(self._memory) > 1 and (
            len(self._memory) > self._memory_items or self._memory_bytes > self.limits.memory_bytes
        ):
            _, evicted = self._memory.popitem(last=False)
            self._memory_bytes -= self._size_of(evicted)

    # -- reading -------------------------------------------------------------------------------

    def path(self, handle: str) -> Path:
        """Disk path of a handle's PNG (only for stores with a ``root``)."""
        if self.root is None:
            raise ImageError("this ImageStore keeps images in memory only")
        if not is_handle(handle):
            raise UnknownHandleError(f"not an image handle: {handle!r}")
        return self.root / handle[4:6] / f"{handle}.png"

    def get(self, handle: str, *, min_side: int | None = None) -> Image.Image:
        """Return the RGB image of ``handle``, or a working copy for a role that shrinks it anyway.

        Args:
            handle: The image's handle.
            min_side: The shorter side the caller needs at least (a role whose own preprocessing
                resizes the image down, e.g. a scorer to 256 pixels, declares twice that as its
                ``working_side``). The image is then box-reduced by the largest integer factor
                that keeps its shorter side at or above ``min_side``; that copy is what stays in
                memory, not the full-size image (a 6000 x 6000 photo: 108 MB full, 0.9 MB for a
                scorer at 512). ``None``, or an image already small enough: the full image.

        Raises:
            UnknownHandleError: the handle is malformed or not in the store.
        """
        if not is_handle(handle):
            raise UnknownHandleError(f"not an image handle: {handle!r}")
        if min_side is None:
            return self._full(handle)
        with self._lock:
            full = self._memory.get(handle)
            width, height = full.size if full is not None else (0, 0)
        if full is None:
            width, height = self._size_on_disk(handle)
        factor = min(width, height) // max(1, min_side)
        if factor < 2:
            return self._full(handle)
        key = f"{handle}@{factor}"
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        if full is None:
            full = self._load(handle, remember=False)
        small = full.reduce(factor)
        if self.root is not None:  # a memory-only store keeps its LRU for the only copies
            with self._lock:
                self._remember(key, small)
        return small

    def _full(self, handle: str) -> Image.Image:
        with self._lock:
            if handle in self._memory:
                self._memory.move_to_end(handle)
                return self._memory[handle]
        return self._load(handle, remember=True)

    def _load(self, handle: str, *, remember: bool) -> Image.Image:
        """Decode ``handle``'s PNG from disk (kept in the LRU when ``remember``)."""
        from PIL import Image

        with Image.open(self._stored(handle)) as img:
            img.load()
            # The store writes RGB PNGs: no convert() copy (a second full-size buffer).
            image = img if img.mode == "RGB" else img.convert("RGB")
        if remember:
            with self._lock:
                self._remember(handle, image)
        return image

    def _size_on_disk(self, handle: str) -> tuple[int, int]:
        """The stored image's size from its PNG header (nothing decoded)."""
        from PIL import Image

        with Image.open(self._stored(handle)) as img:
            return img.size

    def _stored(self, handle: str) -> Path:
        """The PNG file of ``handle`` in this store's folder.

        Raises:
            UnknownHandleError: a memory-only store, or no such file.
        """
        path = self.path(handle) if self.root is not None else None
        if path is None or not path.exists():
            raise UnknownHandleError(f"unknown image handle {handle!r}")
        return path

    def __contains__(self, handle: object) -> bool:
        if not isinstance(handle, str) or not is_handle(handle):
            return False
        return handle in self._memory or (self.root is not None and self.path(handle).exists())

    def resolve(self, ref: str | Path | bytes | Image.Image) -> Image.Image:
        """Return the image behind a handle, or load ``ref`` into the store and return it."""
        if isinstance(ref, str) and is_handle(ref):
            return self.get(ref)
        return self.get(self.put(ref))


def default_store(config: Config | None = None) -> ImageStore:
    """A new store under ``<home>/cache/images`` with ``config``'s ``[images]`` limits.

    There is no process-wide store: each call makes its own object. Stores over the same folder
    see each other's images through it (a handle put by one resolves in another, in this process
    or the next); each keeps its own in-memory LRU. A runtime (:class:`mmagents.runtime.Models`)
    makes one per run and keeps it; callers that want one store shared pass the object around.
    """
    from mmagents._config import load_config

    cfg = config or load_config()
    return ImageStore(cfg.cache_dir / "images", cfg.images)
