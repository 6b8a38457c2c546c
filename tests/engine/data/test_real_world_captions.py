"""Issue 15 items 3, 4 and 9 (files beside the images): captions read as sd-scripts reads them,
text encodings, and the notes about files that are not used."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from engine.data.caption_files import read_caption_file
from engine.data.dataset_config import load_dataset_config
from engine.data.scan import scan_dataset
from engine.errors import ConfigError, DataError
from engine.storage.text import decode_text


def folder(tmp_path: Path, files: dict[str, bytes | str], extra: str = "") -> Path:
    images = tmp_path / "img"
    images.mkdir(exist_ok=True)
    for name, content in files.items():
        if name.lower().endswith((".png", ".gif")):
            Image.new("RGB", (64, 64), (10, 20, 30)).save(images / name)
        else:
            (images / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    toml = tmp_path / "dataset.toml"
    toml.write_text(f'[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "img"\n{extra}\n')
    return toml


def scan(toml: Path):
    return scan_dataset(load_dataset_config(toml), strict=False)


# --- item 3: lines ------------------------------------------------------------------------

@pytest.mark.parametrize("raw,caption,extra", [
    (b"a cat\x0cwith a form feed\nsecond", "a cat\x0cwith a form feed", 1),  # \x0c is not a line break
    (b"a dog\xe2\x80\xa8on a mat", "a dog\u2028on a mat", 0),  # nor is U+2028
    (b"old mac\rsecond line\r", "old mac", 1),  # a lone \r is one
    (b"windows\r\nsecond\r\n", "windows", 1),
    (b"\n\n  \nafter blanks\n", "after blanks", 0),
    (b"\xef\xbb\xbfwith bom", "with bom", 0),
])
def test_caption_lines_split_on_cr_and_lf_only(tmp_path, raw, caption, extra):
    path = tmp_path / "a.txt"
    path.write_bytes(raw)
    read = read_caption_file(path)
    assert (read.caption, read.extra_lines) == (caption, extra)


def test_a_leading_blank_line_is_not_a_blank_caption(tmp_path):
    result = scan(folder(tmp_path, {"a.png": "", "a.caption": "\n\nred square\n"}, 'class_tokens = "sks"'))
    assert result.items[0].caption == "red square"
    assert result.subsets[0].empty_captions == 0
    assert not any("caption is blank" in w for w in result.warnings)
    assert [w for w in result.warnings if "start with blank lines" in w] == [
        f"subset 0: 1 caption file(s) start with blank lines (e.g. {tmp_path / 'img' / 'a.caption'}); the first "
        "non-blank line is used (sd-scripts would train on an empty caption)"]


def test_extra_caption_lines_are_said_once_per_subset(tmp_path):
    result = scan(folder(tmp_path, {"a.png": "", "a.caption": "one\ntwo", "b.png": "", "b.caption": "uno\ndos\ntres",
                                    "c.png": "", "c.caption": "single"}))
    notes = [w for w in result.warnings if "more than one line" in w]
    assert notes == [f"subset 0: 2 caption file(s) have more than one line (e.g. {tmp_path / 'img' / 'a.caption'}); "
                     "only the first line is used, as in sd-scripts; the other lines are for enable_wildcard = true"]
    assert [i.caption for i in result.items] == ["one", "uno", "single"]


def test_txt_captions_beside_images_with_the_default_extension_are_named_with_the_fix(tmp_path):
    result = scan(folder(tmp_path, {"a.png": "", "a.txt": "red", "b.png": "", "b.txt": "blue"}))
    note = [w for w in result.warnings if "caption_extension" in w]
    assert len(note) == 1
    assert str(tmp_path / "img" / "a.txt") in note[0] and str(tmp_path / "img" / "b.txt") in note[0]
    assert "caption_extension is '.caption' (the default)" in note[0]
    assert note[0].endswith('Set caption_extension = ".txt" in the dataset config to use them')


def test_no_extension_note_when_caption_extension_was_chosen(tmp_path):
    result = scan(folder(tmp_path, {"a.png": "", "a.txt": "red"}, 'caption_extension = ".caption"\nclass_tokens = "x"'))
    assert not any("caption_extension" in w for w in result.warnings)


# --- item 4: encodings ---------------------------------------------------------------------

def test_a_caption_in_a_windows_code_page_names_file_and_byte_offset(tmp_path):
    result = scan(folder(tmp_path, {"a.png": "", "a.caption": "caf\u00e9 au lait".encode("cp1252")}))
    assert result.problems == (f"{tmp_path / 'img' / 'a.caption'}: caption file is not UTF-8 text: byte 0xe9 at "
                               "offset 3 is not valid UTF-8 → re-save the file as UTF-8 (with or without BOM), e.g. "
                               "in your editor's 'Save with encoding'",)


def test_utf16_is_named_as_such(tmp_path):
    with pytest.raises(DataError, match=r"x\.txt: caption file is not UTF-8 text \(it starts with a UTF-16 "
                                        r"byte-order mark\): byte 0xff at offset 0"):
        decode_text("hello".encode("utf-16"), "x.txt", what="caption file")
    with pytest.raises(ConfigError, match="offset 0") as caught:
        decode_text(b"\xff\xfeh\x00", "p.txt", kind="config")
    assert caught.value.exit_code == 78


def test_metadata_json_with_bom_is_read_and_cp1252_is_named(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    meta = tmp_path / "meta.json"
    meta.write_bytes(b"\xef\xbb\xbf" + '{"a.png": {"caption": "cr\u00e8me"}}'.encode("utf-8"))
    toml = tmp_path / "d.toml"
    toml.write_text('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nmetadata_file = "meta.json"\n'
                    'image_dir = "."\n')
    assert scan(toml).items[0].caption == "cr\u00e8me"
    meta.write_bytes('{"a.png": {"caption": "cr\u00e8me"}}'.encode("cp1252"))
    assert "metadata_file is not UTF-8 text: byte 0xe8 at offset 25" in scan(toml).problems[0]


def test_dataset_toml_in_a_code_page_is_a_config_error_with_the_offset(tmp_path):
    toml = tmp_path / "d.toml"
    toml.write_bytes('# caf\u00e9\n[[datasets]]\n'.encode("cp1252"))
    with pytest.raises(ConfigError, match=r"d\.toml: dataset config is not UTF-8 text: byte 0xe9 at offset 5"):
        load_dataset_config(toml)
    toml.write_bytes(b"\xef\xbb\xbf" + b'[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "x"\n')
    assert load_dataset_config(toml).datasets[0].resolution in (64, (64, 64))


# --- item 9: files beside the images that look like training data -------------------------

def test_a_gif_beside_its_caption_names_the_format(tmp_path):
    result = scan(folder(tmp_path, {"a.png": "", "a.caption": "ok", "anim.gif": "", "anim.caption": "moving"}))
    messages = [w for w in result.warnings if "anim" in w]
    assert messages == [f"{tmp_path / 'img' / 'anim.caption'}: its image anim.gif is a .gif file, a format sdxl-tui "
                        "(like sd-scripts) does not train on; convert it to PNG or JPEG (.png .jpg .jpeg .webp .bmp)"]
    assert not any("without a matching image" in w for w in result.warnings)


def test_nfd_and_nfc_names_are_matched_once_not_warned_twice(tmp_path):
    image = unicodedata.normalize("NFC", "caf\u00e9") + ".png"
    caption = unicodedata.normalize("NFD", "caf\u00e9") + ".caption"
    assert image[:-4] != caption[:-8]
    result = scan(folder(tmp_path, {image: "", caption: "a cup"}))
    assert result.items[0].caption == "a cup"
    assert result.subsets[0].missing_captions == 0 and result.subsets[0].orphan_captions == 0
    assert [w for w in result.warnings if "Unicode" in w] == [
        f"{tmp_path / 'img' / caption}: its name and its image's ({image}) are the same text in different Unicode "
        "forms (NFC/NFD, as macOS and other systems write names); matched to the image"]
