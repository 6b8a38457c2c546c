"""Kitty and Sixel escapes decode back to the picture; the protocol follows the env vars."""
from __future__ import annotations

import asyncio
import base64
import io
import random
import re

from PIL import Image
from textual.app import App
from textual.widgets import Static

from engine.events.types import Sample
from sdxl_tui.terminal_images import (
    HALFBLOCK,
    KITTY,
    SIXEL,
    ImageProtocol,
    choose_protocol,
    kitty_escape,
    sixel_escape,
    tmux_passthrough,
)
from sdxl_tui.widgets.sample_preview import SamplePreview

ESC = "\x1b"
RED, BLUE = (255, 0, 0), (0, 0, 255)


def png_bytes(size=(300, 200)) -> bytes:
    # Noise so the PNG does not compress below a few chunks.
    image = Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def kitty_commands(escape: str) -> list[tuple[dict, str]]:
    commands = re.findall(r"\x1b_G([^;\x1b]*)(?:;([^\x1b]*))?\x1b\\", escape)
    assert "".join(f"{ESC}_G{k}{';' + p if p else ''}{ESC}\\" for k, p in commands) == escape
    return [(dict(kv.split("=") for kv in keys.split(",")), payload) for keys, payload in commands]


def test_kitty_escape_carries_the_exact_png_in_chunks():
    data = png_bytes()
    commands = kitty_commands(kitty_escape(data, cols=40, rows=12))
    delete, transfers = commands[0], commands[1:]
    assert delete[0]["a"] == "d" and delete[0]["i"] == transfers[0][0]["i"]
    assert len(transfers) >= 3
    first = transfers[0][0]
    assert (first["f"], first["a"], first["c"], first["r"]) == ("100", "T", "40", "12")
    assert [keys["m"] for keys, _ in transfers] == ["1"] * (len(transfers) - 1) + ["0"]
    assert all(set(keys) == {"m"} for keys, _ in transfers[1:])
    assert all(len(payload) <= 4096 for _, payload in transfers)
    assert all(len(payload) == 4096 for _, payload in transfers[:-1])
    assert base64.b64decode("".join(payload for _, payload in transfers)) == data


def test_kitty_escape_small_image_is_one_chunk_with_m0():
    data = png_bytes((4, 4))
    transfers = kitty_commands(kitty_escape(data, 2, 1))[1:]
    assert len(transfers) == 1 and transfers[0][0]["m"] == "0"
    assert base64.b64decode(transfers[0][1]) == data


def decode_sixel(escape: str):
    """Just enough Sixel for the encoder's output: header, raster, registers, bands, `!n`."""
    assert escape.startswith(f"{ESC}Pq") and escape.endswith(f"{ESC}\\")
    body = escape[3:-2]
    raster = re.match(r'"1;1;(\d+);(\d+)', body)
    width, height = int(raster[1]), int(raster[2])
    body = body[raster.end():]
    registers = {}
    for n, r, g, b in re.findall(r"#(\d+);2;(\d+);(\d+);(\d+)", body):
        registers[int(n)] = tuple(round(int(v) * 255 / 100) for v in (r, g, b))
    body = re.sub(r"#\d+;2;\d+;\d+;\d+", "", body)
    pixels = [[None] * width for _ in range(height)]
    top = x = 0
    colour = None
    for token in re.findall(r"#\d+|!\d+.|[$\-]|[?-~]", body):
        if token.startswith("#"):
            colour = registers[int(token[1:])]
        elif token == "$":
            x = 0
        elif token == "-":
            top, x = top + 6, 0
        else:
            count, char = (int(token[1:-1]), token[-1]) if token.startswith("!") else (1, token)
            bits = ord(char) - 63
            for _ in range(count):
                for dy in range(6):
                    if bits >> dy & 1:
                        assert pixels[top + dy][x] is None, "a pixel painted twice"
                        pixels[top + dy][x] = colour
                x += 1
    return width, height, registers, pixels


def test_sixel_two_colour_image_round_trips():
    # 4 wide, 6 high: left two columns red, right two blue, except a blue pixel at (0, 5).
    image = Image.new("RGB", (4, 6), RED)
    image.paste(BLUE, (2, 0, 4, 6))
    image.putpixel((0, 5), BLUE)
    escape = sixel_escape(image, 4, 6)
    assert escape.startswith(f'{ESC}Pq"1;1;4;6#')
    width, height, registers, pixels = decode_sixel(escape)
    assert (width, height) == (4, 6)
    assert sorted(registers.values()) == sorted([RED, BLUE])
    assert re.findall(r"#\d+;2;([\d;]+)", escape) and set(re.findall(r"#\d+;2;([\d;]+)", escape)) == {
        "100;0;0", "0;0;100"}
    assert pixels == [[image.getpixel((x, y)) for x in range(4)] for y in range(6)]
    # Red covers rows 0-4 of column 0 (bits 0b011111 -> '^') and all of column 1 ('~').
    red = next(n for n, rgb in registers.items() if rgb == RED)
    assert f"#{red}^~??$" in escape


def test_sixel_run_length_and_second_band():
    image = Image.new("RGB", (10, 8), RED)
    escape = sixel_escape(image, 10, 8)
    width, height, _, pixels = decode_sixel(escape)
    # Band 1 has all six rows set ('~'), band 2 only its two rows (0b11 -> 'B').
    assert "!10~" in escape and "!10B" in escape and escape.count("-") == 1
    assert (width, height) == (10, 8)
    assert all(p == RED for row in pixels for p in row)


def test_sixel_fits_the_pixel_box_keeping_aspect():
    image = Image.new("RGB", (100, 50), BLUE)
    width, height, _, _ = decode_sixel(sixel_escape(image, 40, 40))
    assert (width, height) == (40, 20)


def test_protocol_default_and_auto():
    assert choose_protocol({}) == ImageProtocol(HALFBLOCK)
    assert choose_protocol({"TERM": "xterm-kitty"}) == ImageProtocol(HALFBLOCK)  # opt-in only
    assert choose_protocol({"SDXL_TUI_IMAGES": "auto", "TERM": "xterm-kitty"}) == ImageProtocol(KITTY)
    assert choose_protocol({"SDXL_TUI_IMAGES": "auto", "TERM_PROGRAM": "WezTerm"}).name == KITTY
    assert choose_protocol({"SDXL_TUI_IMAGES": "auto", "TERM_PROGRAM": "ghostty"}).name == KITTY
    assert choose_protocol({"SDXL_TUI_IMAGES": "auto", "KITTY_WINDOW_ID": "1"}).name == KITTY
    assert choose_protocol({"SDXL_TUI_IMAGES": "auto", "TERM": "xterm-256color"}).name == HALFBLOCK
    assert choose_protocol({"SDXL_TUI_IMAGES": "nonsense", "TERM": "xterm-kitty"}).name == HALFBLOCK


def test_protocol_tmux_falls_back_unless_forced():
    tmux = {"TMUX": "/tmp/tmux-1000/default,1,0", "TERM": "tmux-256color", "KITTY_WINDOW_ID": "3"}
    assert choose_protocol({**tmux, "SDXL_TUI_IMAGES": "auto"}) == ImageProtocol(HALFBLOCK)
    assert choose_protocol({**tmux, "SDXL_TUI_IMAGES": "kitty"}) == ImageProtocol(KITTY, True)
    assert choose_protocol({**tmux, "SDXL_TUI_IMAGES": "Sixel"}) == ImageProtocol(SIXEL, True)
    assert choose_protocol({"SDXL_TUI_IMAGES": "sixel"}) == ImageProtocol(SIXEL, False)
    assert choose_protocol({"SDXL_TUI_IMAGES": "sixel"}, requested="halfblock").name == HALFBLOCK


def test_tmux_passthrough_doubles_escapes():
    inner = kitty_escape(png_bytes((4, 4)), 2, 1)
    wrapped = tmux_passthrough(inner)
    assert wrapped.startswith(f"{ESC}Ptmux;") and wrapped.endswith(f"{ESC}\\")
    assert wrapped[len(f"{ESC}Ptmux;"):-2].replace(ESC + ESC, ESC) == inner
    assert ESC not in wrapped[len(f"{ESC}Ptmux;"):-2].replace(ESC + ESC, "")


class PreviewApp(App):
    def __init__(self, protocol: ImageProtocol) -> None:
        super().__init__()
        self.protocol = protocol

    def compose(self):
        yield Static("header", id="header")
        yield SamplePreview(id="sample", images=self.protocol)


def test_preview_draws_kitty_over_its_half_block_cells(tmp_path):
    path = tmp_path / "sample.png"
    path.write_bytes(png_bytes((64, 64)))

    async def run():
        app = PreviewApp(ImageProtocol(KITTY))
        async with app.run_test(size=(60, 30)) as pilot:
            preview = app.query_one(SamplePreview)
            preview.show(Sample(path=str(path), prompt="a cat", step=10), str(tmp_path))
            await pilot.pause()
            sequence = preview.graphics_sequence()
            blocks = preview._cache[1].plain.split("\n")
            region = preview.content_region
            return sequence, blocks, region

    sequence, blocks, region = asyncio.run(run())
    prefix = f"{ESC}7{ESC}[{region.y + 1};{region.x + 1}H"
    assert region.y >= 1 and sequence.startswith(prefix) and sequence.endswith(f"{ESC}8")
    commands = kitty_commands(sequence[len(prefix):-2])
    first = commands[1][0]
    assert (int(first["c"]), int(first["r"])) == (len(blocks[0]), len(blocks))
    assert base64.b64decode("".join(p for _, p in commands[1:])) == path.read_bytes()


def test_preview_sixel_in_tmux_is_wrapped_and_a_failure_falls_back(tmp_path):
    path = tmp_path / "sample.png"
    Image.new("RGB", (32, 32), RED).save(path)

    async def run():
        app = PreviewApp(ImageProtocol(SIXEL, tmux_passthrough=True))
        async with app.run_test(size=(40, 20)) as pilot:
            preview = app.query_one(SamplePreview)
            preview.show(Sample(path=str(path), prompt="", step=1), "")
            await pilot.pause()
            sequence = preview.graphics_sequence()
            preview._image = "not an image"  # the encoder will fail on this
            preview._cache = ((id(preview._image),) + preview._cache[0][1:], preview._cache[1])
            preview._draw_graphics()
            return sequence, preview._protocol

    sequence, protocol_after_failure = asyncio.run(run())
    wrapped = sequence[sequence.index(f"{ESC}Ptmux;"):-2]  # without the cursor restore
    sixel = wrapped[len(f"{ESC}Ptmux;"):-2].replace(ESC * 2, ESC)
    assert tmux_passthrough(sixel) == wrapped and sixel.startswith(f'{ESC}Pq"1;1;')
    assert protocol_after_failure.name == HALFBLOCK
