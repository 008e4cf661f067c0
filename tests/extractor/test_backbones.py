"""Every registry backbone: output dim, fingerprint; the imagenet path offline; weights files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from extractor.backbones import REGISTRY, get_spec
from extractor.errors import HeadstartError, NotFound, WeightsUnavailable
from extractor.model import LoadedBackbone, resolve
from extractor.weights import cache_file


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_output_dim_and_fingerprint(name):
    resolved = resolve(name, "random")
    model = LoadedBackbone(resolved, device="cpu").setup()
    out = model.embed_arrays(list(_images(2, resolved.size)))
    assert out.shape == (2, resolved.spec.output_dim(resolved.size)) == (2, resolved.fingerprint.dim)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])  # the two different images give different vectors
    again = resolve(name, "random")
    assert again.fingerprint.id == resolved.fingerprint.id
    assert resolve(name, "random:1").fingerprint.id != resolved.fingerprint.id
    if REGISTRY[name].imagenet:
        assert resolve(name, "imagenet").fingerprint.id != resolved.fingerprint.id


def test_documented_dims():
    assert resolve("vgg16", "random").fingerprint.dim == 8192
    assert resolve("vgg16", "random", size=224).fingerprint.dim == 25088
    assert resolve("inception_v3", "random").fingerprint.dim == 2048
    assert resolve("resnet50", "random").fingerprint.dim == 2048
    model = LoadedBackbone(resolve("vgg16", "random", size=224), device="cpu").setup()
    assert model.embed_arrays(list(_images(1, 224))).shape == (1, 25088)


def test_random_weights_are_seeded():
    a = LoadedBackbone(resolve("tiny", "random:3"), "cpu").setup().embed_arrays(list(_images(2, 32)))
    b = LoadedBackbone(resolve("tiny", "random:3"), "cpu").setup().embed_arrays(list(_images(2, 32)))
    c = LoadedBackbone(resolve("tiny", "random:4"), "cpu").setup().embed_arrays(list(_images(2, 32)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(NotFound, match="vgg16") as err:
        get_spec("vgg17")
    assert "inception_v3" in str(err.value)


def test_bad_size_and_weights_text():
    with pytest.raises(HeadstartError, match="expected an integer from 75 to 1024"):
        resolve("inception_v3", "random", size=40)
    with pytest.raises(HeadstartError, match="imagenet, random"):
        resolve("vgg16", "pretrained")
    with pytest.raises(HeadstartError, match="no ImageNet weights"):
        resolve("tiny", "imagenet")


def _trunk_state(name: str, seed: int) -> dict:
    model = LoadedBackbone(resolve(name, f"random:{seed}"), "cpu").setup().model
    return {k: v.contiguous().clone() for k, v in model.state_dict().items()}


def test_imagenet_weights_load_offline_from_torch_cache():
    spec = get_spec("vgg16")
    target = cache_file(spec)
    assert target.name == "vgg16-397923af.pth" and "checkpoints" in str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = _trunk_state("vgg16", 7)
    state["classifier.0.weight"] = torch.zeros(2, 2)  # extra tensors of the full model are ignored
    torch.save(state, target)
    imagenet = LoadedBackbone(resolve("vgg16", "imagenet"), "cpu").setup()
    seeded = LoadedBackbone(resolve("vgg16", "random:7"), "cpu").setup()
    x = list(_images(2, 150))
    np.testing.assert_array_equal(imagenet.embed_arrays(x), seeded.embed_arrays(x))
    assert imagenet.fingerprint.spec["weights"] == "imagenet:VGG16_Weights.IMAGENET1K_V1"


def test_imagenet_missing_offline_names_the_cache_file():
    with pytest.raises(WeightsUnavailable) as err:
        LoadedBackbone(resolve("resnet50", "imagenet"), "cpu").setup()
    message = str(err.value)
    assert str(cache_file(get_spec("resnet50"))) in message
    assert "headstart weights fetch resnet50" in message and "--weights random" in message
    assert "\n" not in message


def test_weights_file_safetensors_and_pth(tmp_path):
    state = _trunk_state("tiny", 5)
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    x = list(_images(2, 32))
    ref = LoadedBackbone(resolve("tiny", "random:5"), "cpu").setup().embed_arrays(x)
    for name in ("w.safetensors", "w.pth"):
        loaded = LoadedBackbone(resolve("tiny", str(tmp_path / name)), "cpu").setup()
        np.testing.assert_array_equal(loaded.embed_arrays(x), ref)
        assert loaded.fingerprint.spec["weights"].startswith("file:sha256=")


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    save_file(_trunk_state("tiny", 0), tmp_path / "tiny.safetensors")
    with pytest.raises(HeadstartError, match="expected a vgg16 checkpoint"):
        LoadedBackbone(resolve("vgg16", str(tmp_path / "tiny.safetensors")), "cpu").setup()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(HeadstartError, match="cannot read weights file"):
        LoadedBackbone(resolve("tiny", str(tmp_path / "junk.pth")), "cpu").setup()
