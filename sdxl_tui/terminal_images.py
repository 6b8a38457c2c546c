"""Terminal graphics escapes (Kitty, Sixel) and the choice between them: pure, no UI.

Half-blocks work everywhere, so they stay the default; a graphics protocol is used only when
the user opts in with `SDXL_TUI_IMAGES=kitty|sixel|auto` (`halfblock` is the default).
`auto` picks Kitty for terminals known to speak it; Sixel support can only be learned by
querying the terminal (and waiting for its answer), so Sixel is used only when asked for.
Inside tmux images need passthrough, which tmux only forwards when configured to
(`allow-passthrough on`), so tmux falls back to half-blocks unless a protocol is forced.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Mapping

ENV_VAR = "SDXL_TUI_IMAGES"
HALFBLOCK, KITTY, SIXEL, AUTO = "halfblock", "kitty", "sixel", "auto"
CHOICES = (HALFBLOCK, KITTY, SIXEL, AUTO)

ESC = "\x1b"
ST = ESC + "\\"
KITTY_CHUNK = 4096
# One fixed id: each new sample replaces the previous picture instead of piling up.
KITTY_IMAGE_ID = 5150
KITTY_TERM_PROGRAMS = ("wezterm", "ghostty")


@dataclass(frozen=True)
class ImageProtocol:
    """How pictures are drawn in this terminal: half-block characters, kitty graphics or sixel (wrapped for tmux when
    inside it)."""
    name: str  # HALFBLOCK, KITTY or SIXEL
    tmux_passthrough: bool = False

    @property
    def is_graphics(self) -> bool:
        """True for kitty or sixel (real pixels rather than half-blocks)."""
        return self.name != HALFBLOCK


def choose_protocol(env: Mapping[str, str], requested: str | None = None) -> ImageProtocol:
    """The protocol for this terminal: `requested` (a flag) wins over `SDXL_TUI_IMAGES`."""
    wanted = (requested or env.get(ENV_VAR) or HALFBLOCK).strip().lower()
    in_tmux = bool(env.get("TMUX"))
    if wanted in (KITTY, SIXEL):
        return ImageProtocol(wanted, tmux_passthrough=in_tmux)
    if wanted == AUTO and not in_tmux and speaks_kitty(env):
        return ImageProtocol(KITTY)
    return ImageProtocol(HALFBLOCK)


def speaks_kitty(env: Mapping[str, str]) -> bool:
    """True when the environment says the terminal speaks the kitty graphics protocol."""
    return ("kitty" in env.get("TERM", "").lower()
            or env.get("TERM_PROGRAM", "").lower() in KITTY_TERM_PROGRAMS
            or bool(env.get("KITTY_WINDOW_ID")))


def tmux_passthrough(sequence: str) -> str:
    """Wrap `sequence` so tmux hands it to the outer terminal (every ESC inside doubled)."""
    return f"{ESC}Ptmux;{sequence.replace(ESC, ESC + ESC)}{ST}"


def kitty_delete() -> str:
    """Delete the previous preview picture and free its data (q=2: the terminal stays quiet)."""
    return f"{ESC}_Ga=d,d=I,i={KITTY_IMAGE_ID},q=2{ST}"


def kitty_escape(png_bytes: bytes, cols: int, rows: int) -> str:
    """Delete the previous picture, then transmit and show `png_bytes` over cols x rows cells.

    The base64 payload goes in chunks of at most 4096 bytes, m=1 on all but the last.
    q=2 keeps the terminal from answering (answers would arrive as key presses); C=1 keeps
    the cursor where it is.
    """
    payload = base64.standard_b64encode(png_bytes).decode("ascii")
    chunks = [payload[i:i + KITTY_CHUNK] for i in range(0, len(payload), KITTY_CHUNK)] or [""]
    parts = [kitty_delete()]
    for index, chunk in enumerate(chunks):
        more = 1 if index < len(chunks) - 1 else 0
        if index == 0:
            keys = f"f=100,a=T,i={KITTY_IMAGE_ID},q=2,C=1,c={cols},r={rows},m={more}"
        else:
            keys = f"m={more}"
        parts.append(f"{ESC}_G{keys};{chunk}{ST}")
    return "".join(parts)


def sixel_escape(image, max_width_px: int, max_height_px: int) -> str:
    """`image` (a PIL image) fitted into the pixel box, as a Sixel sequence (≤ 256 colours)."""
    from PIL import Image

    image = image.convert("RGB")
    scale = min(max_width_px / image.width, max_height_px / image.height)
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    indexed = image.quantize(colors=256)
    width, height = indexed.size
    pixels = list(indexed.tobytes())  # mode P: one palette index per byte
    palette = indexed.getpalette() or []
    used = sorted(set(pixels))
    out = [f"{ESC}Pq", f'"1;1;{width};{height}']
    for n in used:
        r, g, b = palette[3 * n:3 * n + 3]
        out.append(f"#{n};2;{_percent(r)};{_percent(g)};{_percent(b)}")
    bands = []
    for top in range(0, height, 6):
        bands.append(_sixel_band(pixels, width, top, min(6, height - top)))
    out.append("-".join(bands))
    out.append(ST)
    return "".join(out)


def _percent(channel: int) -> int:
    return round(channel * 100 / 255)


def _sixel_band(pixels: list[int], width: int, top: int, band_rows: int) -> str:
    """One six-pixel-high band: per colour present, its columns' bits, then `$` (back to start)."""
    masks: dict[int, list[int]] = {}
    for dy in range(band_rows):
        row = (top + dy) * width
        for x in range(width):
            colour_bits = masks.setdefault(pixels[row + x], [0] * width)
            colour_bits[x] |= 1 << dy
    return "$".join(f"#{n}{_run_length(bits)}" for n, bits in sorted(masks.items())) + "$"


def _run_length(bits: list[int]) -> str:
    out, x = [], 0
    while x < len(bits):
        end = x
        while end < len(bits) and bits[end] == bits[x]:
            end += 1
        char, count = chr(63 + bits[x]), end - x
        out.append(f"!{count}{char}" if count > 3 else char * count)
        x = end
    return "".join(out)
