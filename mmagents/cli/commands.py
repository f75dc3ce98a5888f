"""Core commands: ``models list|check``, ``tools list|run``, ``demo``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mmagents.cli import config_from_args

if TYPE_CHECKING:
    from PIL import Image

    from mmagents._config import Config

__all__ = ["ROLE_CHECKS", "check_roles", "register_demo", "register_models", "register_tools"]


# -- models ----------------------------------------------------------------------------------


def _text_image(text: str) -> Image.Image:
    """A white image with ``text`` drawn large in black (the OCR check's input)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (640, 160), "white")
    ImageDraw.Draw(image).text((30, 40), text, fill="black", font=ImageFont.load_default(size=64))
    return image


def _check_llm(backend: Any, photo: Image.Image) -> str:
    # One structured call proves the model loads, generates and follows a schema (a grammar, for
    # llama.cpp); a bounded schema keeps it to a few tokens.
    from langchain_core.messages import HumanMessage
    from pydantic import BaseModel, Field

    from mmagents.models.structured import invoke_structured

    class Greeting(BaseModel):
        word: str = Field(max_length=20)

    result = invoke_structured(
        backend, Greeting, [HumanMessage("Greet me with one word.")], max_repairs=1
    )
    model = getattr(backend, "model_path", None) or getattr(backend, "model", None)
    shown = f"{model}: " if isinstance(model, str) else ""
    return f"{shown}replied {result.raw.strip()[:60]!r} (model calls: {result.attempts})"


def _check_vlm(backend: Any, photo: Image.Image) -> str:
    return f"caption {backend.caption(photo)[:90]!r}"


def _check_scorer(backend: Any, photo: Image.Image) -> str:
    texts = ["a photo of a cat", "a photo of a car"]
    cat, car = (float(s) for s in backend.score([photo], texts)[0])
    return f"cat photo: 'cat' {cat:.2f} vs 'car' {car:.2f}"


def _check_ocr(backend: Any, photo: Image.Image) -> str:
    lines = backend.read(_text_image("mmagents 42"))
    return f"read {' | '.join(line.text for line in lines)!r}"


def _check_imagegen(backend: Any, photo: Image.Image) -> str:
    result = backend.generate("a cat", 1)[0]
    return f"{result.provenance} {result.image.width}x{result.image.height} from {result.source}"


def _check_embed(backend: Any, photo: Image.Image) -> str:
    vectors = backend.embed(["a cat", "a kitten", "a truck"])
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    return f"{vectors.shape[1]}-d; cos(cat,kitten) {near:.2f} vs cos(cat,truck) {far:.2f}"


#: role → one real inference on a bundled photo, returning what the role saw.
ROLE_CHECKS: dict[str, Callable[[Any, Image.Image], str]] = {
    "llm": _check_llm,
    "vlm": _check_vlm,
    "scorer": _check_scorer,
    "ocr": _check_ocr,
    "imagegen": _check_imagegen,
    "embed": _check_embed,
}


def check_roles(config: Config, roles: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Load each role's backend and run one real inference; never raises, reports per role."""
    from PIL import Image

    from mmagents.models import load_role
    from mmagents.samples import sample_path

    with Image.open(sample_path("cat", config)) as img:
        photo = img.convert("RGB")
    rows = []
    for role in roles or list(ROLE_CHECKS):
        spec = config.role(role)
        start = time.perf_counter()
        try:
            saw = ROLE_CHECKS[role](load_role(role, config), photo)
            ok = True
        except Exception as exc:  # reported per role: one broken backend must not hide the others
            saw, ok = f"{type(exc).__name__}: {exc}", False
        rows.append(
            {
                "role": role,
                "backend": spec.backend,
                "ok": ok,
                "seconds": round(time.perf_counter() - start, 2),
                "saw": saw,
            }
        )
    return rows


def _models_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mmagents.models import BACKENDS

    config = config_from_args(args)
    table = Table(title=f"backends (profile: {config.profile})")
    for column in ("role", "active", "available backends"):
        table.add_column(column)
    for role, registry in BACKENDS.items():
        table.add_row(role, config.role(role).backend, ", ".join(registry.names()))
    Console().print(table)
    Console().print(zoo_table())
    return 0


def zoo_table() -> Any:
    """The model zoo (``models/zoo.toml``) as a rich table: what each model is and where it stands."""
    from rich.table import Table

    from mmagents.models import zoo

    table = Table(title="model zoo (weights from packages; select with [roles.llm] model = NAME)")
    for column in ("name", "role", "size", "context", "source packages", "status"):
        table.add_column(column, overflow="fold")
    for item in zoo.zoo().values():
        packages = item.packages
        source = packages[0] if len(packages) == 1 else f"{packages[0]} … {packages[-1]}"
        table.add_row(
            item.name,
            item.role,
            f"{item.size / 1e6:,.0f} MB",
            f"{item.context_length:,}",
            f"{source} =={item.version}",
            zoo.status(item),
        )
    return table


def _models_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    config = config_from_args(args)
    rows = check_roles(config, args.roles or None)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table(title=f"models check (profile: {config.profile})")
        for column in ("role", "backend", "status", "seconds", "what it saw"):
            table.add_column(column, overflow="fold")
        for row in rows:
            status = "[green]ok[/green]" if row["ok"] else "[red]FAIL[/red]"
            table.add_row(row["role"], row["backend"], status, f"{row['seconds']:.2f}", row["saw"])
        Console().print(table)
    return 0 if all(row["ok"] for row in rows) else 1


def register_models(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents models list|check``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="backends per role, and which one is active").set_defaults(
        func=_models_list
    )
    check = sub.add_parser("check", help="load each role and run one real inference")
    check.add_argument("--roles", nargs="*", choices=list(ROLE_CHECKS), help="roles to check")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(func=_models_check)


# -- tools -----------------------------------------------------------------------------------


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _tools_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mmagents.tools import build_tools

    table = Table(title="tools")
    for column in ("name", "inputs", "description"):
        table.add_column(column, overflow="fold")
    for tool in build_tools(config_from_args(args)):
        inputs = ", ".join(tool.args) if tool.args_schema else ""
        table.add_row(tool.name, inputs, tool.description)
    Console().print(table)
    return 0


def _tools_run(args: argparse.Namespace) -> int:
    from mmagents.errors import ConfigError
    from mmagents.images import default_store
    from mmagents.tools import build_tool

    config = config_from_args(args)
    inputs: dict[str, Any] = {}
    for pair in args.inputs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"tool inputs are KEY=VALUE, got {pair!r}")
        inputs[key] = _parse_value(value)
    if args.image:
        inputs["image"] = default_store(config).put(args.image)
    result = build_tool(args.name, config).invoke(inputs)
    print(json.dumps(result, indent=2, default=str))
    return 0


def register_tools(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents tools list|run``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="registered tools and their inputs").set_defaults(func=_tools_list)
    run = sub.add_parser(
        "run",
        help="run one tool",
        description="Run one tool. Example: mmagents tools run score_image_text "
        '--image cat.png \'texts=["a cat", "a car"]\'',
    )
    run.add_argument("name", help="tool name (see `mmagents tools list`)")
    run.add_argument("--image", metavar="PATH", help="image file; passed to the tool as a handle")
    run.add_argument(
        "-a",
        "--arg",
        dest="inputs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tool input (repeatable); the value is parsed as JSON when it is JSON",
    )
    run.set_defaults(func=_tools_run)


# -- demo ------------------------------------------------------------------------------------


def _roles_demo(config: Config, sample: str) -> int:
    """Run every role tool on a bundled photo and print what each one saw."""
    from rich.console import Console
    from rich.panel import Panel

    from mmagents.images import default_store
    from mmagents.samples import SAMPLES, sample_path
    from mmagents.tools import build_tool

    console = Console()
    handle = default_store(config).put(sample_path(sample, config))
    console.print(
        Panel(f"{sample}: {SAMPLES[sample][1]}\nhandle {handle}", title=f"profile {config.profile}")
    )
    steps: list[tuple[str, dict[str, Any]]] = [
        ("caption", {"image": handle}),
        ("answer_question", {"image": handle, "question": "What animal is in this picture?"}),
        (
            "score_image_text",
            {
                "image": handle,
                "texts": ["a photo of a cat", "a photo of a dog", "a photo of a car"],
            },
        ),
        ("read_text", {"image": handle}),
        ("crop_region", {"image": handle, "box": [100, 50, 400, 300]}),
        ("generate_image", {"prompt": "a cat", "n": 1}),
        ("embed", {"texts": ["a cat on a sofa"]}),
    ]
    failed = 0
    for name, inputs in steps:
        start = time.perf_counter()
        try:
            result = build_tool(name, config).invoke(inputs)
            if name == "embed":
                result = {
                    "dimensions": result["dimensions"],
                    "first values": result["embeddings"][0][:4],
                }
            body, style = json.dumps(result, indent=1, default=str), "green"
        except Exception as exc:  # the demo shows every role even when one fails
            body, style, failed = f"{type(exc).__name__}: {exc}", "red", failed + 1
        took = time.perf_counter() - start
        console.print(Panel(body, title=f"{name} ({took:.1f}s)", border_style=style))
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.roles:
        return _roles_demo(config, args.sample)
    from mmagents.cli.idealgpt import run_demo

    return int(run_demo(config, sample=args.sample) or 0)


def register_demo(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents demo``: the main job on a bundled photo."""
    from mmagents.samples import SAMPLES

    parser.add_argument("--sample", default="cat", choices=list(SAMPLES), help="bundled photo")
    parser.add_argument(
        "--roles",
        action="store_true",
        help="instead of the IdealGPT graph, run every role tool and print what each saw",
    )
    parser.set_defaults(func=_demo)
