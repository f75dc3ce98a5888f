"""The comm document's HTML page, opened in headless Chromium: images load, steps are in order.

Needs a Chromium binary (``apt-get install -y chromium``); skipped with the reason otherwise. The
page under test is a copy of the saved one with a checking script appended; Chromium loads it from
disk with the network disabled, runs the script after the ``load`` event and dumps the DOM.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmagents.graphs._comm_doc import DocStep, InterleavedDocument
from mmagents.images import ImageStore

CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const steps = [...document.querySelectorAll("section.step")].map((s) => ({
    step: Number(s.dataset.step),
    heading: s.querySelector("h2").textContent.trim(),
    provenance: s.dataset.provenance,
    images: [...s.querySelectorAll("img")].map((i) => [i.complete, i.naturalWidth, i.naturalHeight]),
  }));
  const notice = document.getElementById("provenance-notice");
  const out = document.createElement("pre");
  out.id = "mmagents-check";
  out.textContent = JSON.stringify({steps, notice: notice ? notice.textContent : null});
  document.body.appendChild(out);
});
</script>
"""

SIZES = [(40, 30), (24, 48), (32, 32)]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver)")


def check_in_browser(page: Path, tmp_path: Path) -> dict[str, Any]:
    checked = page.with_name("checked.html")
    checked.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--dump-dom",
        checked.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'<pre id="mmagents-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert match, f"no check output from Chromium (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))  # type: ignore[no-any-return]


@pytest.fixture
def saved_page(tmp_path: Path) -> tuple[Path, InterleavedDocument]:
    store = ImageStore(None)
    steps = []
    for i, (size, provenance) in enumerate(
        zip(SIZES, ["generated", "retrieved", "given"], strict=True)
    ):
        handle = store.put(Image.new("RGB", size, (60 * i, 120, 200 - 50 * i)))
        steps.append(
            DocStep(
                title=f"Step title {i + 1} <b>&</b>",
                text=f"Paragraph one of step {i + 1}.\n\nParagraph two.",
                image=handle,
                provenance=provenance,
                source=f"/photos/p{i}.png",
                scores={"alignment": 0.3, "consistency": None if i == 0 else 0.8},
            )
        )
    doc = InterleavedDocument("How to brew pour-over coffee", steps)
    return doc.save(tmp_path / "doc", store).html, doc


def test_images_load_and_steps_are_in_order(
    saved_page: tuple[Path, InterleavedDocument], tmp_path: Path
) -> None:
    page, doc = saved_page
    result = check_in_browser(page, tmp_path)
    steps = result["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert [s["heading"] for s in steps] == [
        f"Step {i}: {s.title}" for i, s in enumerate(doc.steps, start=1)
    ]
    assert [s["images"] for s in steps] == [[[True, w, h]] for w, h in SIZES]
    assert [s["provenance"] for s in steps] == ["generated", "retrieved", "given"]
    assert result["notice"] and "not generated" in result["notice"]


def test_a_broken_image_is_caught(
    saved_page: tuple[Path, InterleavedDocument], tmp_path: Path
) -> None:
    page, _ = saved_page
    text = page.read_text()
    second = text.split("data:image/png;base64,")[2]
    page.write_text(text.replace(second[:40], "A" * 40, 1))  # corrupt step 2's PNG header
    widths = [s["images"][0][1] for s in check_in_browser(page, tmp_path)["steps"]]
    assert widths[0] == SIZES[0][0] and widths[1] == 0 and widths[2] == SIZES[2][0]


def test_generated_only_page_has_no_retrieval_notice(tmp_path: Path) -> None:
    store = ImageStore(None)
    handle = store.put(Image.new("RGB", (16, 16), (5, 5, 5)))
    step = DocStep(title="t", text="x", image=handle, provenance="generated", source="sd-turbo")
    page = InterleavedDocument("topic", [step]).save(tmp_path / "doc", store).html
    result = check_in_browser(page, tmp_path)
    assert result["notice"] is None and result["steps"][0]["images"] == [[True, 16, 16]]
