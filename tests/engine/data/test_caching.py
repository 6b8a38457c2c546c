"""Latent and text-encoder caches on the tiny SDXL and the demo images: each option has an
effect you can see (encoder calls counted with hooks, files reused or rewritten)."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from train_helpers import one_torch_thread, scan_for  # noqa: E402,F401  (autouse: one thread is faster for the tiny model here)

from engine.config.schema import RunConfig  # noqa: E402
from engine.control.run_control import RunControl  # noqa: E402
from engine.data.cache_files import latent_cache_path, read_cache_key, sample_positions, text_cache_path  # noqa: E402
from engine.data.images import load_training_image  # noqa: E402
from engine.data.latent_cache import pixels_to_tensor  # noqa: E402
from engine.data.training_data import prepare_training_data  # noqa: E402
from engine.events.types import Phase, PhaseProgress  # noqa: E402
from engine.model.encode import encode_captions  # noqa: E402


@pytest.fixture(scope="module")
def model(frozen_tiny_sdxl):
    return frozen_tiny_sdxl


def write_dataset(root: Path, demo, *, subset: str = "", general: str = "") -> Path:
    """A private copy of the demo images with a dataset TOML (tests may change the files)."""
    images = root / "images"
    if not images.exists():
        shutil.copytree(demo.image_dir, images)
    toml = root / "dataset.toml"
    toml.write_text(
        "[general]\ncaption_extension = \".txt\"\nenable_bucket = true\n" + general +
        "\n[[datasets]]\nresolution = 64\nbatch_size = 2\nbucket_reso_steps = 32\n"
        "min_bucket_reso = 32\nmax_bucket_reso = 128\n"
        f"\n  [[datasets.subsets]]\n  image_dir = \"{images}\"\n  num_repeats = 1\n" + subset)
    return toml


def make_asymmetric(images: Path) -> None:
    """The demo shapes are mirror-symmetric; a corner mark makes a flip visible in the pixels."""
    from PIL import Image

    for path in sorted(images.glob("*.png")):
        with Image.open(path) as im:
            marked = im.convert("RGB")
        marked.paste((255, 0, 255), (0, 0, 8, 8))
        marked.save(path)


class CallCounter:
    """Counts forward calls of a module with a hook (the module itself runs unchanged)."""

    def __init__(self, module) -> None:
        self.calls = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture
def counters(model):
    made = {"vae": CallCounter(model.vae.encoder), "te1": CallCounter(model.text_encoder1),
            "te2": CallCounter(model.text_encoder2)}
    yield made
    for counter in made.values():
        counter.close()


def prepare(model, toml: Path, events=None, control=None, **options):
    cfg = RunConfig().with_values(dataset_config=str(toml), **options)
    return prepare_training_data(cfg, model, emit=(events.append if events is not None else lambda e: None),
                                 device="cpu", dtype=torch.float32, control=control or RunControl(),
                                 scanned=scan_for(cfg))


def all_latents(data, epoch=0):
    out = {}
    for batch in data.epoch_batches(epoch):
        for path, latent in zip(batch.paths, batch.latents):
            out[path] = latent.clone()
    return out


# ---- latents ----------------------------------------------------------------------------------

def test_in_memory_latents_mean_no_vae_during_the_epoch(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    events = []
    data = prepare(model, toml, events, cache_latents=True)
    assert counters["vae"].calls > 0
    encoded = counters["vae"].calls
    batches = list(data.epoch_batches(0))
    assert counters["vae"].calls == encoded  # nothing encoded while iterating
    assert all(b.latents is not None and b.pixels is None for b in batches)
    assert batches[0].latents.shape[1] == 4
    assert not list((tmp_path / "images").glob("*.safetensors"))  # memory only
    phases = [e for e in events if isinstance(e, Phase) and e.name == "caching_latents"]
    assert phases and phases[0].total == 12
    progress = [e for e in events if isinstance(e, PhaseProgress) and e.name == "caching_latents"]
    assert progress[-1].done == progress[-1].total == 12


def test_without_cache_batches_carry_pixels(model, demo_dataset, tmp_path):
    toml = write_dataset(tmp_path, demo_dataset)
    data = prepare(model, toml, cache_latents=False)
    batch = next(iter(data.epoch_batches(0)))
    assert batch.latents is None
    assert batch.pixels is not None and batch.pixels.shape[1] == 3
    assert batch.pixels.min() >= -1 and batch.pixels.max() <= 1


def test_disk_cache_is_reused_by_the_next_run(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    first = prepare(model, toml, cache_latents=True, cache_latents_to_disk=True)
    files = sorted((tmp_path / "images").glob("*.sdxl-tui.safetensors"))
    assert len(files) == 12
    assert not list((tmp_path / "images").glob(".*.tmp"))  # atomic writes leave no temp files
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    calls = counters["vae"].calls
    assert calls > 0

    events = []
    second = prepare(model, toml, events, cache_latents=True, cache_latents_to_disk=True)
    assert counters["vae"].calls == calls  # every latent came from disk
    assert "latents: 12 of 12 read from the disk cache, 0 encoded" in [getattr(e, "message", "") for e in events]
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    a, b = all_latents(first), all_latents(second)
    assert a.keys() == b.keys()
    for path in a:
        torch.testing.assert_close(a[path], b[path])


def test_changed_image_is_recomputed_and_a_touched_one_is_not(model, demo_dataset, tmp_path, counters):
    from PIL import Image

    toml = write_dataset(tmp_path, demo_dataset)
    before = all_latents(prepare(model, toml, cache_latents_to_disk=True))
    images = tmp_path / "images"
    changed = images / "00_red_circle.png"
    Image.new("RGB", (64, 64), (0, 200, 255)).save(changed)
    touched = images / "01_blue_square.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 5_000_000_000))
    calls = counters["vae"].calls

    after = all_latents(prepare(model, toml, cache_latents_to_disk=True))
    assert counters["vae"].calls == calls + 1  # one VAE pass, for the one changed image
    assert not torch.allclose(before[str(changed)], after[str(changed)])
    torch.testing.assert_close(before[str(touched)], after[str(touched)])
    key = read_cache_key(latent_cache_path(changed, (64, 64)))
    assert key["image"]["size"] == changed.stat().st_size


def test_a_different_vae_recomputes_every_latent(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    prepare(model, toml, cache_latents_to_disk=True)
    calls = counters["vae"].calls
    weight = model.vae.encoder.conv_in.weight
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(1.01)
        prepare(model, toml, cache_latents_to_disk=True)
        assert counters["vae"].calls > calls
        assert counters["vae"].calls - calls == 3  # 12 images in 3 buckets, 4 per VAE batch
    finally:
        with torch.no_grad():
            weight.copy_(original)


def test_flip_aug_caches_both_flips_and_flips_like_the_uncached_path(model, demo_dataset, tmp_path):
    toml = write_dataset(tmp_path, demo_dataset, subset="  flip_aug = true\n")
    make_asymmetric(tmp_path / "images")
    cached = prepare(model, toml, cache_latents_to_disk=True)
    uncached = prepare(model, toml, cache_latents=False)
    image = tmp_path / "images" / "04_red_square.png"
    from safetensors.torch import load_file

    stored = load_file(latent_cache_path(image, (96, 32)))
    assert set(stored) == {"latents", "latents_flipped"}
    assert not torch.allclose(stored["latents"], stored["latents_flipped"])

    flipped_seen = unflipped_seen = 0
    for epoch in range(3):
        for c, u in zip(cached.epoch_batches(epoch), uncached.epoch_batches(epoch)):
            assert c.paths == u.paths
            torch.testing.assert_close(c.time_ids, u.time_ids)
            for n, path in enumerate(c.paths):
                bucket = (int(u.time_ids[n, 5]), int(u.time_ids[n, 4]))
                file = load_file(latent_cache_path(Path(path), bucket))
                # the uncached pixels tell whether this sample is mirrored
                plain = pixels_to_tensor(load_training_image(Path(path), bucket, rng=random.Random(0)).pixels)
                mirrored = not torch.equal(u.pixels[n], plain)
                if mirrored:
                    torch.testing.assert_close(u.pixels[n], torch.flip(plain, dims=[2]))
                expected = file["latents_flipped"] if mirrored else file["latents"]
                torch.testing.assert_close(c.latents[n], expected)
                flipped_seen += mirrored
                unflipped_seen += not mirrored
    assert flipped_seen and unflipped_seen


def test_flip_pair_cached_later_when_flip_aug_is_turned_on(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    prepare(model, toml, cache_latents_to_disk=True)
    calls = counters["vae"].calls
    toml = write_dataset(tmp_path, demo_dataset, subset="  flip_aug = true\n")
    prepare(model, toml, cache_latents_to_disk=True)
    assert counters["vae"].calls > calls  # files without the mirror image were recomputed
    calls = counters["vae"].calls
    toml = write_dataset(tmp_path, demo_dataset)
    prepare(model, toml, cache_latents_to_disk=True)
    assert counters["vae"].calls == calls  # a flip pair also serves a run without flip_aug


def test_stop_while_caching_returns_incomplete_data(model, demo_dataset, tmp_path):
    toml = write_dataset(tmp_path, demo_dataset)
    control = RunControl()
    control.request_stop("test")
    data = prepare(model, toml, control=control, cache_latents_to_disk=True)
    assert data.interrupted
    with pytest.raises(RuntimeError):
        next(iter(data.epoch_batches(0)))


# ---- text-encoder outputs ---------------------------------------------------------------------

TEXT = dict(cache_text_encoder_outputs=True, network_train_unet_only=True)


def test_cached_text_outputs_mean_no_text_encoder_calls_during_the_epoch(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    events = []
    data = prepare(model, toml, events, **TEXT)
    assert counters["te1"].calls > 0 and counters["te2"].calls > 0
    before = (counters["te1"].calls, counters["te2"].calls)
    batches = [b for epoch in range(2) for b in data.epoch_batches(epoch)]
    assert (counters["te1"].calls, counters["te2"].calls) == before
    batch = batches[0]
    hidden, pooled = encode_captions(model, batch.captions, "cpu")
    torch.testing.assert_close(batch.text_hidden, hidden)
    torch.testing.assert_close(batch.text_pooled, pooled)
    assert [e.total for e in events if isinstance(e, Phase) and e.name == "caching_text_encoder_outputs"] == [12]
    assert not list((tmp_path / "images").glob("*.te.sdxl-tui.safetensors"))


def test_without_text_cache_batches_carry_no_text_outputs(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    data = prepare(model, toml, cache_text_encoder_outputs=False)
    batch = next(iter(data.epoch_batches(0)))
    assert batch.text_hidden is None and batch.text_pooled is None
    assert counters["te1"].calls == 0


def test_text_cache_on_disk_is_reused_and_follows_the_caption(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    prepare(model, toml, cache_text_encoder_outputs_to_disk=True, **TEXT)
    assert len(list((tmp_path / "images").glob("*.te.sdxl-tui.safetensors"))) == 12
    calls = counters["te1"].calls
    prepare(model, toml, cache_text_encoder_outputs_to_disk=True, **TEXT)
    assert counters["te1"].calls == calls  # all from disk

    (tmp_path / "images" / "00_red_circle.txt").write_text("a purple circle\n")
    data = prepare(model, toml, cache_text_encoder_outputs_to_disk=True, **TEXT)
    assert counters["te1"].calls == calls + 1  # one batch, for the one new caption
    key = read_cache_key(text_cache_path(tmp_path / "images" / "00_red_circle.png"))
    assert key["caption"] == "a purple circle"
    for batch in data.epoch_batches(0):
        if "a purple circle" in batch.captions:
            n = batch.captions.index("a purple circle")
            hidden, _ = encode_captions(model, ["a purple circle"], "cpu")
            torch.testing.assert_close(batch.text_hidden[n], hidden[0])
            break
    else:
        pytest.fail("the changed caption never came up")


def test_text_cache_refuses_changing_captions(model, demo_dataset, tmp_path):
    from engine.errors import ConfigError

    toml = write_dataset(tmp_path, demo_dataset, subset="  shuffle_caption = true\n")
    with pytest.raises(ConfigError):
        prepare(model, toml, **TEXT)


def test_caching_with_workers_gives_the_same_latents(model, demo_dataset, tmp_path):
    toml = write_dataset(tmp_path, demo_dataset, subset="  flip_aug = true\n")
    serial = prepare(model, toml, cache_latents=True)
    parallel = prepare(model, toml, cache_latents=True, max_data_loader_n_workers=2)
    for a, b in zip(serial.epoch_batches(0), parallel.epoch_batches(0)):
        assert a.paths == b.paths
        torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)


def test_memory_and_disk_caching_draw_the_same_latents(model, demo_dataset, tmp_path):
    toml = write_dataset(tmp_path, demo_dataset)
    memory = all_latents(prepare(model, toml, cache_latents=True))
    disk = all_latents(prepare(model, toml, cache_latents_to_disk=True))
    assert memory.keys() == disk.keys()
    for path in memory:
        torch.testing.assert_close(memory[path], disk[path], rtol=0, atol=0)


def test_a_damaged_cache_file_is_recomputed(model, demo_dataset, tmp_path, counters):
    toml = write_dataset(tmp_path, demo_dataset)
    before = all_latents(prepare(model, toml, cache_latents_to_disk=True))
    image = tmp_path / "images" / "00_red_circle.png"
    latent_cache_path(image, (64, 64)).write_bytes(b"not a safetensors file")
    calls = counters["vae"].calls
    after = all_latents(prepare(model, toml, cache_latents_to_disk=True))
    assert counters["vae"].calls == calls + 1
    # the same noise; only the VAE batch differs (one image instead of four)
    torch.testing.assert_close(before[str(image)], after[str(image)])
    assert read_cache_key(latent_cache_path(image, (64, 64))) is not None


@pytest.mark.e2e
@pytest.mark.parametrize("cached", [True, False], ids=["cached", "not-cached"])
def test_engine_run_never_calls_the_text_encoders_once_their_outputs_are_cached(
        tmp_path, tiny_model, demo_dataset, monkeypatch, cached):
    from train_helpers import tiny_config, train
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    calls = {"total": 0, "at_training_start": None}
    for cls in (CLIPTextModel, CLIPTextModelWithProjection):
        original = cls.forward

        def counting(self, *args, _original=original, **kwargs):
            calls["total"] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(cls, "forward", counting)

    def on_event(event):
        if isinstance(event, Phase) and event.name == "training":
            calls["at_training_start"] = calls["total"]

    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=3, network_train_unet_only=True,
                            cache_text_encoder_outputs=cached), on_event=on_event)
    assert run.result.ok, run.result.error
    during_training = calls["total"] - calls["at_training_start"]
    if cached:
        assert calls["at_training_start"] > 0 and during_training == 0
    else:
        assert during_training >= 2 * 3  # both encoders, at least once per step


@pytest.mark.e2e
def test_engine_runs_reuse_latents_cached_on_disk(tmp_path, tiny_model, demo_dataset, monkeypatch):
    from diffusers import AutoencoderKL
    from train_helpers import tiny_config, train

    toml = write_dataset(tmp_path, demo_dataset)
    encodes = []
    original = AutoencoderKL.encode
    monkeypatch.setattr(AutoencoderKL, "encode", lambda self, *a, **k: encodes.append(1) or original(self, *a, **k))

    def run(name):
        return train(tiny_config(tmp_path / name, tiny_model, demo_dataset, max_train_steps=2,
                                 dataset_config=str(toml), cache_latents=True, cache_latents_to_disk=True))

    first = run("first")
    assert first.result.ok, first.result.error
    files = sorted((tmp_path / "images").glob("*x*.sdxl-tui.safetensors"))
    assert len(files) == 12 and encodes
    mtimes = [f.stat().st_mtime_ns for f in files]
    encodes.clear()
    second = run("second")
    assert second.result.ok, second.result.error
    assert encodes == []  # the second run read every latent from disk
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert first.losses == second.losses


def test_each_rank_can_fill_the_disk_cache(model, demo_dataset, tmp_path, counters):
    """With several processes each writes its share first (then all read every file); without
    torch.distributed running, one process still ends with every latent."""
    toml = write_dataset(tmp_path, demo_dataset)
    cfg = RunConfig().with_values(dataset_config=str(toml), cache_latents_to_disk=True)
    data = prepare_training_data(cfg, model, emit=lambda e: None, device="cpu", dtype=torch.float32,
                                 control=RunControl(), rank=1, world_size=2, scanned=scan_for(cfg))
    assert len(list((tmp_path / "images").glob("*x*.sdxl-tui.safetensors"))) == 12
    assert len(data.latents) == 12
    assert all(b.latents is not None for b in data.epoch_batches(0))


@pytest.mark.parametrize("numel", [1, 2, 63, 64, 65, 37_945_344])  # the last: SDXL's CLIP-L token embedding
def test_fingerprint_sample_positions_span_the_tensor_and_stay_in_bounds(numel):
    positions = sample_positions(numel, 64)
    assert len(positions) == min(64, numel)
    assert int(positions[0]) == 0 and int(positions[-1]) == numel - 1
    assert bool((positions[1:] > positions[:-1]).all())
