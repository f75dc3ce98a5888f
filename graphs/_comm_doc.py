"""The interleaved document: steps of text, each with an image and where that image came from.

One object, three files. :class:`InterleavedDocument` is what the ``comm`` graph produces and what
the ``comm-filter`` graph scores; it is saved as

* ``document.json`` — the canonical form (format ``mmagents.interleaved/1``, below);
* ``document.md`` — Markdown with the images as files under ``images/``;
* ``document.html`` — one self-contained page, images embedded as base64 data URLs.

Both the JSON and the Markdown file load back with :func:`load_document`.

JSON format ``mmagents.interleaved/1``::

    {
      "format": "mmagents.interleaved/1",
      "topic": "How to brew pour-over coffee",
      "steps": [
        {
          "title": "Heat the water",
          "text": "Bring water to about 94 °C ...",
          "image": "images/step_01.png",   # path relative to the JSON file, a data URL, or null
          "provenance": "generated",       # generated | retrieved | given | fake | null (no image)
          "source": "stabilityai/sd-turbo",# model id or file the image came from
          "prompt": "Heat the water: ...", # what the image backend was asked for
          "origin": "planned",             # given (from the input) | planned (written by the LLM)
          "scores": {"alignment": 0.31, "consistency": null},
          "attempts": 1,                   # image-backend calls spent on this step
          "passed": true                   # met the thresholds (false: retries ran out)
        }
      ],
      "meta": {"backends": {...}, "settings": {...}}
    }

Only ``title`` and ``text`` are required per step; a hand-written document may leave out the rest.

Markdown form: ``# topic``, then per step a ``## Step N: title`` heading, an optional
``![...](path)`` image line, an italic ``*Image: ...*`` provenance line, the text paragraphs, and a
hidden ``<!-- mmagents:step {...} -->`` comment carrying the remaining fields as JSON. Any Markdown
with ``##`` step headings loads: the first image of a section is its image, the rest is its text.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from mmagents.images import ImageStore

__all__ = [
    "FORMAT",
    "DocStep",
    "InterleavedDocument",
    "SavedDocument",
    "load_document",
    "provenance_notice",
]

FORMAT = "mmagents.interleaved/1"
_STEP_META = re.compile(r"<!--\s*mmagents:step\s+(?P<json>\{.*?\})\s*-->", re.DOTALL)
_IMAGE_LINE = re.compile(r"^!\[[^\]]*\]\((?P<path>[^)\s]+)(?:\s+\"[^\"]*\")?\)\s*$")
_HEADING_PREFIX = re.compile(r"^(?:step\s+)?\d+\s*[:.)\-–—]\s*", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


class DocStep(BaseModel):
    """One step of an interleaved document (also the pipelines' input step: images as handles).

    Only ``text`` is required; unknown keys (a hand-written document's extras) are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    title: str = Field("", description="Short step title.")
    text: str = Field(description="The step's instructions or narrative.")
    image: str | None = Field(None, description="Image handle (img_...) of the step, if any.")
    provenance: str | None = Field(
        None, description="Where the image came from: generated, retrieved, given or fake."
    )
    source: str | None = Field(None, description="Model id or file path the image came from.")
    prompt: str | None = Field(None, description="The prompt the image backend was given.")
    origin: str = Field(
        "given", description="given (text from the input) or planned (written by the LLM)."
    )
    scores: dict[str, float | None] = Field(
        default_factory=dict,
        description="alignment (image-text cosine) and consistency (mean cosine with the "
        "previous steps' images; null for the first image).",
    )
    attempts: int = Field(0, description="Image-backend calls spent on this step.")
    passed: bool | None = Field(None, description="Whether the chosen image met the thresholds.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DocStep:
        """Build a step from a mapping, ignoring unknown keys.

        Raises:
            ConfigError: ``text`` is missing or a field has the wrong type.
        """
        if "text" not in data:
            raise ConfigError(f"a document step needs a 'text' field, got keys {sorted(data)}")
        try:
            return cls.model_validate({**data, "scores": dict(data.get("scores") or {})})
        except ValidationError as exc:
            raise ConfigError(f"malformed document step: {exc.errors()[0]['msg']}") from None


@dataclass(frozen=True)
class SavedDocument:
    """Where :meth:`InterleavedDocument.save` wrote the document."""

    folder: Path
    json: Path
    markdown: Path
    html: Path
    images: list[Path]


@dataclass
class InterleavedDocument:
    """A topic and its steps (text + image handle + provenance + scores)."""

    topic: str
    steps: list[DocStep]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- plain data --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; images stay as handles (``save`` turns them into files)."""
        return {
            "format": FORMAT,
            "topic": self.topic,
            "steps": [s.model_dump() for s in self.steps],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InterleavedDocument:
        """Inverse of :meth:`to_dict` (image fields are kept as given: handles, paths or URLs).

        Raises:
            ConfigError: unknown format or malformed steps.
        """
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise ConfigError(f"unsupported document format {fmt!r}; expected {FORMAT!r}")
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise ConfigError("a document needs a 'steps' list")
        return cls(
            topic=str(data.get("topic", "")),
            steps=[DocStep.from_dict(s) for s in steps],
            meta=dict(data.get("meta") or {}),
        )

    @classmethod
    def from_output(cls, output: Mapping[str, Any]) -> InterleavedDocument:
        """The document a ``comm`` run produced (its ``llm_calls`` and ``log`` go into ``meta``)."""
        meta = {
            **dict(output.get("meta") or {}),
            "llm_calls": output.get("llm_calls", 0),
            "log": list(output.get("log") or []),
        }
        return cls.from_dict({"topic": output["topic"], "steps": output["steps"], "meta": meta})

    # -- files -------------------------------------------------------------------------------

    def save(
        self, folder: str | Path, store: ImageStore, *, stem: str = "document"
    ) -> SavedDocument:
        """Write JSON, Markdown (+ ``images/``) and a self-contained HTML page into ``folder``."""
        out = Path(folder)
        (out / "images").mkdir(parents=True, exist_ok=True)
        relative: list[str | None] = []
        written: list[Path] = []
        for i, step in enumerate(self.steps, start=1):
            if step.image is None:
                relative.append(None)
                continue
            path = out / "images" / f"step_{i:02d}.png"
            store.get(step.image).save(path, format="PNG")
            relative.append(f"images/{path.name}")
            written.append(path)
        data = self.to_dict()
        for step_data, rel in zip(data["steps"], relative, strict=True):
            step_data["image"] = rel
        paths = SavedDocument(
            out, out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}.html", written
        )
        paths.json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
        paths.markdown.write_text(self.to_markdown(relative), "utf-8")
        paths.html.write_text(self.to_html(store), "utf-8")
        return paths

    def to_markdown(self, image_paths: list[str | None]) -> str:
        """Markdown text; ``image_paths`` gives each step's image path (``None``: no image)."""
        lines = [f"# {_one_line(self.topic)}", ""]
        if notice := provenance_notice(self.steps):
            lines += [f"> **Note:** {notice}", ""]
        for i, (step, path) in enumerate(zip(self.steps, image_paths, strict=True), start=1):
            lines += [f"## Step {i}: {_one_line(step.title)}", ""]
            if path is not None:
                lines += [f"![Step {i}: {_one_line(step.title)}]({path})", ""]
                lines += [f"*Image: {image_caption(step)}*", ""]
            lines += [step.text.strip(), ""]
            meta = step.model_dump(exclude={"title", "text", "image"})
            lines += [f"<!-- mmagents:step {json.dumps(meta, ensure_ascii=False)} -->", ""]
        return "\n".join(lines)

    def to_html(self, store: ImageStore) -> str:
        """One self-contained HTML page: images embedded as base64 PNG data URLs."""
        steps = []
        for i, step in enumerate(self.steps, start=1):
            steps.append(
                {
                    "index": i,
                    "title": step.title,
                    "paragraphs": [p.strip() for p in step.text.split("\n\n") if p.strip()],
                    "src": _data_url(store, step.image) if step.image else None,
                    "caption": image_caption(step),
                    "provenance": step.provenance or "none",
                }
            )
        template = _html_template()
        return str(
            template.render(
                topic=self.topic, steps=steps, notice=provenance_notice(self.steps), meta=self.meta
            )
        )


def image_caption(step: DocStep) -> str:
    """One line saying where a step's image came from, and its scores."""
    source = step.source or "unknown source"
    origin = {
        "generated": f"generated by {source}",
        "retrieved": f"retrieved (not generated) from {Path(source).name or source}",
        "given": "given with the input document",
        "fake": f"placeholder from the fake test backend ({source})",
    }.get(step.provenance or "", f"{step.provenance} from {source}")
    parts = [origin]
    for name in ("alignment", "consistency"):
        value = step.scores.get(name)
        if value is not None:
            parts.append(f"{name} {value:.3f}")
    if step.passed is False:
        parts.append("below threshold after all retries")
    return " · ".join(parts)


def provenance_notice(steps: list[DocStep]) -> str | None:
    """A sentence telling readers when images were not generated, or ``None``."""
    kinds = {s.provenance for s in steps if s.image is not None}
    notes = []
    if "retrieved" in kinds:
        notes.append(
            "Images marked 'retrieved' were picked from an existing local image folder as the "
            "closest match to the step text; they were not generated."
        )
    if "fake" in kinds:
        notes.append("Images marked 'placeholder' are solid-colour test images, not real pictures.")
    return " ".join(notes) or None


def load_document(path: str | Path, store: ImageStore) -> InterleavedDocument:
    """Load a document saved as JSON (``mmagents.interleaved/1``) or Markdown.

    Image references (paths relative to the file, data URLs, or handles) are put into ``store``
    and replaced by handles.

    Raises:
        ConfigError: unreadable file or malformed document.
        ImageError: an image reference cannot be loaded.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"document not found: {file}")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        try:
            doc = InterleavedDocument.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON in {file}: {exc}") from None
    elif file.suffix.lower() in (".md", ".markdown"):
        doc = parse_markdown(text)
    else:
        raise ConfigError(f"unsupported document type {file.suffix!r}: use .json or .md")
    for step in doc.steps:
        if step.image is not None:
            step.image = store.put(_resolve_ref(step.image, file.parent))
    return doc


def _resolve_ref(ref: str, base: Path) -> str:
    if ref.startswith(("data:", "http://", "https://", "img_")) or Path(ref).is_absolute():
        return ref
    return str(base / ref)


def parse_markdown(text: str) -> InterleavedDocument:
    """Parse the Markdown form (see the module docstring); image fields keep the raw paths.

    Raises:
        ConfigError: no ``## `` step headings were found.
    """
    sections = re.split(r"^## +", text, flags=re.MULTILINE)
    head, bodies = sections[0], sections[1:]
    if not bodies:
        raise ConfigError("no steps found: a Markdown document needs '## ' step headings")
    topic = next((ln[2:].strip() for ln in head.splitlines() if ln.startswith("# ")), "")
    return InterleavedDocument(topic=topic, steps=[_parse_section(b) for b in bodies])


def _parse_section(body: str) -> DocStep:
    heading, _, rest = body.partition("\n")
    data: dict[str, Any] = {"title": _HEADING_PREFIX.sub("", heading.strip(), count=1)}
    if match := _STEP_META.search(rest):
        data.update(json.loads(match["json"]))
    text_lines = []
    for line in _COMMENT.sub("", rest).splitlines():
        image = _IMAGE_LINE.match(line.strip())
        if image and "image" not in data:
            data["image"] = image["path"]
        elif not image and not line.strip().startswith("*Image:"):
            text_lines.append(line)
    data["text"] = "\n".join(text_lines).strip()
    return DocStep.from_dict(data)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _data_url(store: ImageStore, handle: str) -> str:
    buffer = io.BytesIO()
    store.get(handle).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@cache
def _html_template() -> jinja2.Template:
    source = (resources.files("mmagents.graphs") / "templates" / "comm_document.html.j2").read_text(
        encoding="utf-8"
    )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source)
