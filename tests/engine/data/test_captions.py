"""sd-scripts caption processing: keep tokens, shuffle, dropouts, prefix/suffix, warm-up."""
from __future__ import annotations

import random

from engine.data.captions import CaptionOptions, process_caption

TAGS = "sks woman, red hair, smiling, outdoors, sunset, bokeh"


def run(options: CaptionOptions, seed: int = 0, caption: str = TAGS, **kw) -> str:
    return process_caption(caption, options, random.Random(seed), **kw)


def test_no_options_leaves_caption_alone():
    assert run(CaptionOptions()) == TAGS


def test_shuffle_keeps_the_first_keep_tokens_in_place():
    opts = CaptionOptions(shuffle_caption=True, keep_tokens=2)
    outs = {run(opts, seed) for seed in range(30)}
    assert len(outs) > 5
    for out in outs:
        tags = out.split(", ")
        assert tags[:2] == ["sks woman", "red hair"]
        assert sorted(tags) == sorted(TAGS.split(", "))


def test_same_seed_same_caption():
    opts = CaptionOptions(shuffle_caption=True, caption_tag_dropout_rate=0.3)
    assert run(opts, 7) == run(opts, 7)


def test_keep_tokens_separator_keeps_prefix_and_suffix_groups():
    caption = "sks woman, red hair ||| smiling, outdoors, sunset ||| masterpiece, best quality"
    opts = CaptionOptions(shuffle_caption=True, keep_tokens_separator="|||", keep_tokens=5)
    for seed in range(20):
        tags = run(opts, seed, caption).split(", ")
        assert tags[:2] == ["sks woman", "red hair"]
        assert tags[-2:] == ["masterpiece", "best quality"]
        assert sorted(tags[2:5]) == ["outdoors", "smiling", "sunset"]


def test_caption_dropout_rate_drops_whole_caption():
    assert run(CaptionOptions(caption_dropout_rate=1.0)) == ""
    outs = [run(CaptionOptions(caption_dropout_rate=0.5), seed) for seed in range(200)]
    assert 60 < outs.count("") < 140 and outs.count(TAGS) == 200 - outs.count("")


def test_dropout_every_n_epochs():
    opts = CaptionOptions(caption_dropout_every_n_epochs=3)
    assert [run(opts, epoch=e) == "" for e in range(1, 7)] == [False, False, True, False, False, True]


def test_tag_dropout_never_drops_kept_tokens():
    opts = CaptionOptions(caption_tag_dropout_rate=1.0, keep_tokens=1)
    assert run(opts) == "sks woman"
    partial = [run(CaptionOptions(caption_tag_dropout_rate=0.5, keep_tokens=1), s) for s in range(50)]
    assert all(p.startswith("sks woman") for p in partial)
    assert len({len(p.split(", ")) for p in partial}) > 2


def test_prefix_and_suffix_are_added_and_kept_by_keep_tokens():
    opts = CaptionOptions(caption_prefix="photo of", caption_suffix="4k", shuffle_caption=True, keep_tokens=1)
    for seed in range(10):
        out = run(opts, seed)
        assert out.startswith("photo of sks woman, ")
        assert "sunset" in out and out.count(",") == TAGS.count(",")


def test_custom_separator_splits_and_parts_join_with_that_separator():
    out = run(CaptionOptions(caption_separator=";", shuffle_caption=True), 1, "a; b; c; d")
    assert sorted(out.split("; ")) == ["a", "b", "c", "d"] and "," not in out


def test_shuffled_tags_rejoin_with_the_subsets_separator_not_a_mix():
    opts = CaptionOptions(caption_separator=". ", secondary_separator="|", shuffle_caption=True)
    out = run(opts, 3, "a photo. red|blue. a dog. grass")
    assert "," not in out and "red. blue" in out
    assert sorted(out.replace("red. blue", "RB").split(". ")) == ["RB", "a dog", "a photo", "grass"]
    # the default separator rejoins exactly as before (and as sd-scripts): ", "
    assert run(CaptionOptions(shuffle_caption=True), 0).count(", ") == TAGS.count(", ")


def test_wildcards_pick_one_choice_and_one_line():
    opts = CaptionOptions(enable_wildcard=True)
    seen = {run(opts, seed, "a {red|blue|green} car, {{literal}}") for seed in range(40)}
    assert seen == {f"a {c} car, {{literal}}" for c in ("red", "blue", "green")}
    lines = {run(opts, seed, "first line\nsecond {x|y}") for seed in range(40)}
    assert lines == {"first line", "second x", "second y"}
    # without enable_wildcard: the first line, braces untouched
    assert run(CaptionOptions(), 0, "one {a|b}\ntwo") == "one {a|b}"
    assert not opts.is_static and CaptionOptions().is_static


def test_secondary_separator_keeps_a_group_together():
    opts = CaptionOptions(secondary_separator=";;;", shuffle_caption=True)
    for seed in range(10):
        out = run(opts, seed, "sks, red hair;;;blue eyes, smiling")
        assert "red hair,blue eyes" in out and ";;;" not in out


def test_token_warmup_grows_the_caption():
    opts = CaptionOptions(token_warmup_min=1, token_warmup_step=10)
    lengths = [len(run(opts, step=s).split(", ")) for s in (0, 5, 10)]
    assert lengths[0] == 1 and lengths[0] < lengths[1] < lengths[2] == 6
    ratio = CaptionOptions(token_warmup_min=2, token_warmup_step=0.5)  # half of 100 steps
    assert len(run(ratio, step=0, max_train_steps=100).split(", ")) == 2
    assert len(run(ratio, step=50, max_train_steps=100).split(", ")) == 6


def test_static_options_are_reported_for_text_caching():
    assert CaptionOptions().is_static
    assert not CaptionOptions(shuffle_caption=True).is_static
    assert not CaptionOptions(caption_dropout_every_n_epochs=2).is_static
