from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from mmagents._config import ImageLimits
from mmagents.errors import (
    ImageError,
    ImageTooLargeError,
    RemoteImageRefusedError,
    UnknownHandleError,
)
from mmagents.images import ImageStore, is_handle


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_handles_are_content_hashes_and_survive_a_new_store(tmp_path: Path) -> None:
    image = Image.new("RGB", (20, 10), (200, 10, 10))
    store = ImageStore(tmp_path)
    handle = store.put(image)
    assert is_handle(handle)
    assert store.put(_png(image)) == handle  # same pixels, same handle, whatever the source
    reopened = ImageStore(tmp_path)  # e.g. a later process
    assert handle in reopened
    assert reopened.get(handle).getpixel((0, 0)) == (200, 10, 10)


def test_modes_are_normalised_to_rgb_with_transparency_on_white(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert store.get(store.put(rgba)).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.new("L", (4, 4), 128)
    assert store.get(store.put(grey)).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    store = ImageStore(tmp_path)
    assert store.get(store.put(buffer.getvalue())).size == (20, 40)


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, ImageLimits(max_pixels=100))
    with pytest.raises(ImageTooLargeError, match="pixels"):
        store.put(_png(Image.new("RGB", (20, 20))))


def test_byte_limit(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, ImageLimits(max_bytes=10))
    with pytest.raises(ImageTooLargeError, match="bytes"):
        store.put(_png(Image.new("RGB", (20, 20))))


def test_corrupt_and_missing_images_are_typed_errors(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(ImageError, match="cannot decode"):
        store.put(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ImageError, match="not found"):
        store.put(tmp_path / "absent.png")
    with pytest.raises(UnknownHandleError):
        store.get("img_0000000000000000")
    with pytest.raises(UnknownHandleError):
        store.get("../../etc/passwd")


def test_remote_urls_are_refused_unless_enabled(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(RemoteImageRefusedError, match="allow_remote"):
        store.put("http://127.0.0.1:9/cat.png")


def test_data_urls_are_accepted(tmp_path: Path) -> None:
    import base64

    data = base64.b64encode(_png(Image.new("RGB", (3, 3), "blue"))).decode()
    store = ImageStore(tmp_path)
    assert store.get(store.put(f"data:image/png;base64,{data}")).getpixel((1, 1)) == (0, 0, 255)


def test_in_memory_store(tmp_path: Path) -> None:
    store = ImageStore(None)
    handle = store.put(Image.new("RGB", (2, 2)))
    assert store.get(handle).size == (2, 2)
    with pytest.raises(ImageError):
        store.path(handle)


def test_default_store_is_a_new_object_per_call_sharing_the_home_folder(tmp_path: Path) -> None:
    from mmagents._config import load_config
    from mmagents.images import default_store

    env = {"MMAGENTS_HOME": str(tmp_path / "home"), "MMAGENTS_IMAGES__MAX_PIXELS": "100"}
    config = load_config(environ=env)
    first, second = default_store(config), default_store(config)
    assert first is not second  # no process-wide store: a runtime keeps its own
    assert first.root == second.root == config.cache_dir / "images"
    assert first.limits == config.images and first.limits.max_pixels == 100
    handle = first.put(Image.new("RGB", (5, 5), "red"))
    assert second.get(handle).getpixel((0, 0)) == (255, 0, 0)  # through the folder
    with pytest.raises(ImageTooLargeError):
        second.put(Image.new("RGB", (11, 10)))
    other = load_config(environ={"MMAGENTS_HOME": str(tmp_path / "other")})
    assert handle not in default_store(other)


def _put_after(
    root: Path, image: Image.Image, gate: object, handles: list[str], errors: list[BaseException]
) -> None:
    store = ImageStore(root)
    gate.wait()  # type: ignore[attr-defined]
    try:
        handles.append(store.put(image))
    except BaseException as exc:
        errors.append(exc)


def test_stores_writing_the_same_new_image_at_once_do_not_collide(tmp_path: Path) -> None:
    # Several store objects (one per run) over one folder may store the same new image at the
    # same moment; each writes its own temporary file before the atomic rename. Before the fix,
    # one of eight writers failed with FileNotFoundError in every run.
    import threading

    workers = 8
    for round_ in range(10):
        image = Image.new("RGB", (300, 300), (round_ * 20 % 256, 30, 60))
        barrier = threading.Barrier(workers)
        handles: list[str] = []
        errors: list[BaseException] = []
        args = (tmp_path, image, barrier, handles, errors)
        threads = [threading.Thread(target=_put_after, args=args) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(set(handles)) == 1
        assert ImageStore(tmp_path).get(handles[0]).size == (300, 300)
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"
