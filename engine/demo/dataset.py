"""A small, learnable demo dataset: coloured shapes on plain backgrounds, with captions.

Everything is drawn with PIL from fixed parameters, so the same call always writes the same
files. The images come in three aspect ratios (1:1, 3:1, 1:3) that land in three different
buckets at resolution 64 with 32-pixel bucket steps. The files follow sd-scripts' formats:
a dataset TOML (`[general]`, `[[datasets]]`, `[[datasets.subsets]]`), one `.txt` caption
beside each image, and a prompts file with inline `--w --h --s --l --d` options.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.storage.atomic import atomic_write_text

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 60, 220),
    "green": (30, 170, 60),
    "yellow": (235, 200, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")

# Words a prompt about the demo may use beyond the captions; the tiny model's tokenizer
# gives each of them a whole-word token.
EXTRA_PROMPT_WORDS = ("an", "the", "of", "with", "and", "photo", "image", "shape", "small", "large")

ASPECTS = {"square": (1, 1), "landscape": (3, 1), "portrait": (1, 3)}


@dataclass(frozen=True)
class DemoImage:
    """One picture of the demo dataset: a shape of a colour on a background."""
    name: str
    shape: str
    colour: str
    background: str
    aspect: str

    @property
    def caption(self) -> str:
        """The caption written next to the image."""
        return f"a {self.colour} {self.shape} on a {self.background} background"


# A dozen images: every shape in every aspect ratio, colours and backgrounds varied so a
# caption word always means the same thing in the pixels.
DEMO_IMAGES: tuple[DemoImage, ...] = (
    DemoImage("00_red_circle", "circle", "red", "white", "square"),
    DemoImage("01_blue_square", "square", "blue", "white", "square"),
    DemoImage("02_green_triangle", "triangle", "green", "white", "square"),
    DemoImage("03_yellow_circle", "circle", "yellow", "black", "square"),
    DemoImage("04_red_square", "square", "red", "gray", "landscape"),
    DemoImage("05_blue_circle", "circle", "blue", "white", "landscape"),
    DemoImage("06_green_square", "square", "green", "black", "landscape"),
    DemoImage("07_yellow_triangle", "triangle", "yellow", "gray", "landscape"),
    DemoImage("08_red_triangle", "triangle", "red", "white", "portrait"),
    DemoImage("09_blue_triangle", "triangle", "blue", "gray", "portrait"),
    DemoImage("10_green_circle", "circle", "green", "white", "portrait"),
    DemoImage("11_yellow_square", "square", "yellow", "black", "portrait"),
)

SAMPLE_PROMPTS = (
    "a red circle on a white background",
    "a blue square on a white background",
    "a green triangle on a black background",
)


@dataclass(frozen=True)
class DemoDataset:
    """Where the demo dataset was written."""
    root: Path
    dataset_toml: Path
    image_dir: Path
    sample_prompts: Path
    num_images: int


def caption_words() -> list[str]:
    """Every word the demo captions and prompts use, in a stable order."""
    words: list[str] = []
    for text in [image.caption for image in DEMO_IMAGES] + list(SAMPLE_PROMPTS):
        words.extend(text.split())
    words.extend(COLOURS)
    words.extend(BACKGROUNDS)
    words.extend(SHAPES)
    words.extend(EXTRA_PROMPT_WORDS)
    return list(dict.fromkeys(words))


def _image_size(aspect: str, resolution: int) -> tuple[int, int]:
    wide, tall = ASPECTS[aspect]
    return resolution * wide, resolution * tall


def draw_image(item: DemoImage, resolution: int = 64):
    """The picture for one demo item: the shape centred, filling most of the short side."""
    from PIL import Image, ImageDraw

    width, height = _image_size(item.aspect, resolution)
    image = Image.new("RGB", (width, height), BACKGROUNDS[item.background])
    draw = ImageDraw.Draw(image)
    side = int(min(width, height) * 0.7)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side - 1, top + side - 1)
    fill = COLOURS[item.colour]
    if item.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif item.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(left + side // 2, top), (left, top + side - 1), (left + side - 1, top + side - 1)], fill=fill)
    return image


def _dataset_toml(image_dir: Path, resolution: int, num_repeats: int) -> str:
    # sd-scripts resolves a relative image_dir against the working directory, not the
    # TOML's folder, so the path is written absolute.
    return (
        "# Demo dataset for sdxl-tui (sd-scripts dataset format).\n"
        "[general]\n"
        'caption_extension = ".txt"\n'
        "enable_bucket = true\n"
        "shuffle_caption = false\n"
        "\n"
        "[[datasets]]\n"
        f"resolution = {resolution}\n"
        "batch_size = 2\n"
        "bucket_reso_steps = 32\n"
        "min_bucket_reso = 32\n"
        f"max_bucket_reso = {resolution * 2}\n"
        "\n"
        "  [[datasets.subsets]]\n"
        f"  image_dir = {_toml_string(str(image_dir))}\n"
        f"  num_repeats = {num_repeats}\n"
    )


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _sample_prompts(resolution: int) -> str:
    lines = ["# Demo sample prompts (sd-scripts format: --w --h size, --s steps, --l guidance, --d seed)"]
    for index, prompt in enumerate(SAMPLE_PROMPTS):
        lines.append(f"{prompt} --w {resolution} --h {resolution} --s 4 --l 5 --d {index + 1}")
    return "\n".join(lines) + "\n"


def make_demo_dataset(out_dir: Path | str, resolution: int = 64, num_repeats: int = 2) -> DemoDataset:
    """Write images + captions into out_dir/images, plus dataset.toml and sample_prompts.txt."""
    if resolution < 32 or resolution % 32:
        raise ValueError("resolution must be a positive multiple of 32")
    root = Path(out_dir).expanduser().resolve()
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for item in DEMO_IMAGES:
        draw_image(item, resolution).save(image_dir / f"{item.name}.png", optimize=False)
        atomic_write_text(image_dir / f"{item.name}.txt", item.caption + "\n")
    dataset_toml = atomic_write_text(root / "dataset.toml", _dataset_toml(image_dir, resolution, num_repeats))
    prompts = atomic_write_text(root / "sample_prompts.txt", _sample_prompts(resolution))
    return DemoDataset(root, dataset_toml, image_dir, prompts, len(DEMO_IMAGES))
