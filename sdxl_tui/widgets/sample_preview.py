"""The newest sample image, drawn with half-block characters, and always its PNG path.

Each cell shows two pixels ("▀": foreground above, background below), which needs only
24-bit colour, so it works over SSH and inside tmux. Terminal graphics protocols (Sixel,
Kitty) would be sharper but break in tmux and many terminals: not used here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Group
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from engine.events import Sample
from sdxl_tui.run_model import display_path


def load_image(path: Path):
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
    DEFAULT_CSS = """
    SamplePreview { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Latest sample"
        self._sample: Optional[Sample] = None
        self._output_dir = ""
        self._image = None
        self._error = ""
        self._cache: tuple = ((), None)

    def show(self, sample: Optional[Sample], output_dir: str) -> None:
        if sample == self._sample:
            return
        self._sample, self._output_dir = sample, output_dir
        self._image, self._error = None, ""
        if sample is not None:
            path = self._resolve(sample.path)
            try:
                self._image = load_image(path)
            except FileNotFoundError:
                self._error = f"the image is not there (any more): {path}"
            except (OSError, ValueError) as exc:
                self._error = f"cannot show the image: {exc}"
        self.refresh()

    def _resolve(self, path: str) -> Path:
        """As written (absolute, or relative to the working dir), else inside the output dir."""
        candidate = Path(path)
        if not candidate.is_absolute() and self._output_dir and not candidate.exists():
            inside = Path(self._output_dir) / candidate
            if inside.exists():
                return inside
        return candidate

    def render(self) -> Group | Text:
        sample = self._sample
        if sample is None:
            return Text("no sample yet (p asks for one now)", style="grey50")
        # The path is never cut: it wraps (overflow fold) and the image gives up the rows.
        caption = Text.assemble((f"step {sample.step}  ", "bold"), (display_path(sample.path, self._output_dir), "cyan"),
                                overflow="fold")
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
