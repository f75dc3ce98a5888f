"""Image memory: peak RSS while 64 distinct 6000 x 6000 images enter the image store.

Run: ``.venv/bin/python bench/image_memory.py [--images 64] [--side 6000]``. Each image is a
small, highly compressible PNG (tens of KB, under the 40 MP limit) that decodes to 108 MB of RGB:
what a hostile client of ``mmagents serve`` can send. The images go through the same door as
the HTTP API (``ImageStore.put_from_client`` with ``data:`` URLs) into a store on disk under a
temporary folder, then each is read back once (``get``), as a tool would. A second pass reads
them all from a fresh store (nothing in memory) at a scorer's working size (``get(handle,
min_side=512)``, what ``score_image_text`` asks for the ``label_space`` scorer): only the reduced
copies stay in memory.

Prints the resident set before, the peak (``VmHWM``) and the growth, against the goal of 1.5 GiB
on top of the loaded models (no model is loaded here: the figure is the store's own cost). Before
the byte bound the store kept up to 64 decoded images (about 7 GB for these).
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from mmagents._config import ImageLimits
from mmagents.images import ImageStore

GOAL_BYTES = int(1.5 * 1024**3)


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Restart the peak (``VmHWM``) from the current RSS, so encoding the inputs is not counted."""
    Path("/proc/self/clear_refs").write_text("5")


def _png_data_url(index: int, side: int) -> str:
    """A distinct image: a flat colour and one rectangle whose place and colour depend on index."""
    image = Image.new("RGB", (side, side), (index * 37 % 256, index * 91 % 256, 128))
    draw = ImageDraw.Draw(image)
    x = (index * 97) % (side - 200)
    draw.rectangle((x, x, x + 150, x + 150), fill=(255 - index, index, 7))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    del image, draw
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--min-side", type=int, default=512, help="working size of pass two")
    args = parser.parse_args()

    # Encode the inputs first (the client's side), so their cost is not counted as the store's.
    urls = [_png_data_url(i, args.side) for i in range(args.images)]
    sizes = sorted(len(u) for u in urls)
    with tempfile.TemporaryDirectory() as folder:
        limits = ImageLimits()
        store = ImageStore(Path(folder) / "images", limits)
        _reset_peak()
        before = _status("VmRSS")
        started = time.perf_counter()
        handles = [store.put_from_client(url) for url in urls]
        for handle in handles:
            store.get(handle)
        elapsed = time.perf_counter() - started
        peak = _status("VmHWM")
        after = _status("VmRSS")
        del store
        working = ImageStore(Path(folder) / "images", limits)
        _reset_peak()
        w_before = _status("VmRSS")
        w_started = time.perf_counter()
        sizes_seen = {working.get(h, min_side=args.min_side).size for h in handles}
        w_elapsed = time.perf_counter() - w_started
        w_peak = _status("VmHWM")
        w_kept = working._memory_bytes
    growth = peak - before
    assert len(set(handles)) == args.images, "the images were not distinct"
    print(
        f"image_memory: {args.images} distinct {args.side}x{args.side} PNGs "
        f"({sizes[0] // 1024}-{sizes[-1] // 1024} KB as data URLs), "
        f"store memory budget {limits.memory_bytes / 2**20:.0f} MiB"
    )
    print(f"  RSS before        {before / 2**20:8.0f} MiB")
    print(f"  peak RSS (VmHWM)  {peak / 2**20:8.0f} MiB")
    print(f"  RSS after         {after / 2**20:8.0f} MiB")
    print(f"  peak growth       {growth / 2**20:8.0f} MiB  ({elapsed:.1f} s)")
    print(f"  growth / goal     {growth / GOAL_BYTES:8.2f}  (goal: <= 1.00, i.e. <= 1.5 GiB)")
    print(
        f"working-size reads (min_side {args.min_side}, copies {sorted(sizes_seen)}): "
        f"peak growth {(w_peak - w_before) / 2**20:.0f} MiB, "
        f"kept in memory {w_kept / 2**20:.1f} MiB ({w_elapsed:.1f} s)"
    )


if __name__ == "__main__":
    main()
