"""The newest sample image, drawn with half-block characters, and always its PNG path.

Each cell shows two pixels ("▀": foreground above, background below), which needs only
24-bit colour, so it works over SSH and inside tmux. Sharper Kitty or Sixel graphics are
opt-in (`SDXL_TUI_IMAGES`, see `sdxl_tui/terminal_images.py`): the half-blocks stay the
layout, and the picture is written over their cells after each refresh, on the UI thread.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Optional

from rich.console import Group
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from engine.events.types import Sample
from sdxl_tui.run_model import display_path
from sdxl_tui.terminal_images import (
    HALFBLOCK,
    KITTY,
    ImageProtocol,
    choose_protocol,
    kitty_delete,
    kitty_escape,
    sixel_escape,
    tmux_passthrough,
)

log = logging.getLogger(__name__)
# Sixel is sized in pixels; the cell size needs a terminal query, so assume a common one.
SIXEL_CELL_PX = (10, 20)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_image(path: Path):
    """The image at `path` as RGB (Pillow). Raises OSError when it cannot be read."""
    from PIL import Image  # pillow is only needed once a sample exists

    with Image.open(path) as image:
        return image.convert("RGB")


def half_blocks(image, width: int, height: int) -> Text:
    """`image` scaled to fit `width` x `height` cells (2 pixels per cell, aspect kept)."""
    from PIL import Image

    scale = min(width / image.width, (height * 2) / image.height)
    size = (max(1, int(image.width * scale)), max(2, int(image.height * scale) // 2 * 2))
    pixels = image.resize(size, Image.Resampling.BILINEAR).load()
    lines = []
    for y in range(0, size[1], 2):
        line = Text()
        for x in range(size[0]):
            top, bottom = pixels[x, y], pixels[x, y + 1]
            line.append("▀", Style(color=f"rgb({top[0]},{top[1]},{top[2]})",
                                   bgcolor=f"rgb({bottom[0]},{bottom[1]},{bottom[2]})"))
        lines.append(line)
    return Text("\n").join(lines)


class SamplePreview(Widget):
    """The newest sample image, drawn with the terminal's best image protocol, half-blocks otherwise."""
    DEFAULT_CSS = """
    SamplePreview { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None, images: ImageProtocol | None = None) -> None:
        super().__init__(id=id)
        self._protocol = images if images is not None else choose_protocol(os.environ)
        self._path: Optional[Path] = None
        self.border_title = "Latest sample"
        self._sample: Optional[Sample] = None
        self._output_dir = ""
        self._image = None
        self._error = ""
        self._cache: tuple = ((), None)

    def show(self, sample: Optional[Sample], output_dir: str) -> None:
        """Show `sample` (its path relative to `output_dir`); an image that cannot be read is shown as a message."""
        if sample == self._sample:
            return
        self._sample, self._output_dir = sample, output_dir
        self._image, self._error, self._path = None, "", None
        if sample is not None:
            path = self._path = self._resolve(sample.path)
            try:
                self._image = load_image(path)
            except FileNotFoundError:
                self._error = f"the image is not there (any more): {path}"
            except (OSError, ValueError) as exc:
                self._error = f"cannot show the image: {exc}"
        self.refresh()
        self._schedule_graphics()

    # --- opt-in terminal graphics over the half-block layout ---

    def on_mount(self) -> None:
        """With a graphics protocol, follow screen changes (the picture is drawn over the screen, so it must be
        cleared when another screen shows)."""
        if self._protocol.is_graphics:
            self.app.screen_change_signal.subscribe(self, self._screen_changed)

    def on_resize(self) -> None:
        """Draw the picture again at the new size."""
        self._schedule_graphics()

    def on_unmount(self) -> None:
        """Remove a picture drawn with a graphics protocol."""
        self._clear_graphics()

    def _screen_changed(self, screen) -> None:
        # A Kitty picture floats above the text: hide it while another screen covers ours.
        if screen is self.screen:
            self._schedule_graphics()
        else:
            self._clear_graphics()

    def _schedule_graphics(self) -> None:
        if self._protocol.is_graphics and self._image is not None:
            self.call_after_refresh(self._draw_graphics)

    def _write(self, sequence: str) -> bool:
        driver = self.app._driver
        if driver is None or self.app.is_headless:
            return False
        driver.write(sequence)
        driver.flush()
        return True

    def _clear_graphics(self) -> None:
        if self._protocol.name == KITTY:
            try:
                self._write(self._wrap(kitty_delete()))
            except Exception:  # leaving: nothing more to do for a picture
                pass

    def _wrap(self, sequence: str) -> str:
        return tmux_passthrough(sequence) if self._protocol.tmux_passthrough else sequence

    def _draw_graphics(self) -> None:
        if not self._protocol.is_graphics or self._image is None or not self.screen.is_current:
            return
        try:
            sequence = self.graphics_sequence()
            if sequence:
                self._write(sequence)
        except Exception as exc:  # any failure: the half-blocks are already on screen
            log.warning("sample preview: %s graphics failed (%s); using half-blocks",
                        self._protocol.name, exc)
            self._protocol = ImageProtocol(HALFBLOCK)

    def graphics_sequence(self) -> Optional[str]:
        """The escape that draws the picture over the half-block cells now on screen."""
        key, blocks = self._cache
        if blocks is None or self._image is None or key[0] != id(self._image):
            return None
        lines = blocks.plain.split("\n")
        cols, rows = len(lines[0]), len(lines)
        if self._protocol.name == KITTY:
            escape = kitty_escape(self._png_bytes(), cols, rows)
        else:
            escape = sixel_escape(self._image, cols * SIXEL_CELL_PX[0], rows * SIXEL_CELL_PX[1])
        region = self.content_region
        # ESC7/ESC8 save and restore the cursor Textual left; CSI row;col H is 1-based.
        return f"\x1b7\x1b[{region.y + 1};{region.x + 1}H{self._wrap(escape)}\x1b8"

    def _png_bytes(self) -> bytes:
        if self._path is not None:
            data = self._path.read_bytes()
            if data.startswith(PNG_SIGNATURE):
                return data
        buffer = io.BytesIO()
        self._image.save(buffer, format="PNG")
        return buffer.getvalue()

    def _resolve(self, path: str) -> Path:
        """As written (absolute, or relative to the working dir), else inside the output dir."""
        candidate = Path(path)
        if not candidate.is_absolute() and self._output_dir and not candidate.exists():
            inside = Path(self._output_dir) / candidate
            if inside.exists():
                return inside
        return candidate

    def render(self) -> Group | Text:
        """Step, path and prompt above the image in half-blocks (kitty or sixel draw over them), or a line saying no
        sample exists yet."""
        sample = self._sample
        if sample is None:
            return Text("no sample yet (p asks for one now)", style="grey50")
        # The path is never cut: it wraps (overflow fold) and the image gives up the rows.
        caption = Text.assemble((f"step {sample.step}  ", "bold"),
                                (display_path(sample.path, self._output_dir), "cyan"), overflow="fold")
        prompt = Text(sample.prompt, style="italic grey70", overflow="ellipsis", no_wrap=True)
        width = max(1, self.content_size.width)
        caption_rows = len(caption.wrap(self.app.console, width))
        height = self.content_size.height - caption_rows - 1
        if self._image is None or height < 2:
            return Group(caption, prompt, Text(self._error, style="red"))
        key = (id(self._image), width, height)
        if self._cache[0] != key:
            self._cache = (key, half_blocks(self._image, width, height))
        return Group(self._cache[1], caption, prompt)
