"""The backbone zoo (issue 14): any torchvision model by name, curated entries checked against torchvision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from extractor import zoo
from extractor.backbones import CURATED_ZOO, IMAGENET_MEAN, IMAGENET_STD, REGISTRY, get_spec
from extractor.errors import NotFound
from extractor.model import LoadedBackbone, resolve
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import make_folder, run_main

CURATED = [row[0] for row in CURATED_ZOO]


@pytest.mark.parametrize("name", CURATED)
def test_curated_entries_match_torchvision(name):
    spec = REGISTRY[name]
    size, mean, std = zoo.transforms_of(name)
    assert (spec.default_size, spec.imagenet, spec.mean, spec.std) == (size, zoo.default_weights(name), mean, std)
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert spec.output_dim(size) == zoo.output_dim(name, size)


@pytest.mark.parametrize("name", CURATED)
def test_the_cut_is_the_input_of_torchvisions_last_classifier_layer(name):
    resolved = resolve(name, "random")
    ours = LoadedBackbone(resolved, "cpu").setup()
    from torchvision.models import get_model

    kwargs = {"image_size": resolved.size} if name.startswith("vit_") else {}
    direct = get_model(name, weights=None, **kwargs).eval().to(memory_format=torch.channels_last)  # as ours
    missing, _ = direct.load_state_dict(ours.model.state_dict(), strict=False)
    last = _last_layer(direct)
    assert all(k.startswith(last[0]) for k in missing), missing  # only the classifier's last layer is ours to skip
    captured = {}
    last[1].register_forward_hook(lambda mod, args, out: captured.update(x=args[0]))
    image = np.random.default_rng(0).integers(0, 255, (resolved.size, resolved.size, 3), dtype=np.uint8)
    features = ours.embed_arrays([image])
    with torch.inference_mode():
        direct(ours.normalize(torch.from_numpy(image[None])))
    assert features.shape == (1, resolved.fingerprint.dim)
    assert np.allclose(features, captured["x"].flatten(1).numpy(), rtol=1e-4, atol=1e-5)


def _last_layer(model) -> tuple[str, torch.nn.Module]:
    for attr in ("heads", "fc", "head"):
        if hasattr(model, attr):
            module = getattr(model, attr)
            if isinstance(module, torch.nn.Sequential):
                name, last = list(module.named_children())[-1]
                return f"{attr}.{name}", last
            return attr, module
    head = model.classifier
    index = max(i for i, layer in enumerate(head) if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)))
    return f"classifier.{index}", head[index]


def test_the_shipped_table_matches_the_installed_torchvision():
    assert zoo.table() == zoo.live_table(), "run `python -m extractor.zoo --write`"


def test_every_model_is_listed_and_a_typo_gets_close_matches(capsys):
    code, out, _ = run_main(capsys, "backbones", "--all", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(zoo.names()) <= set(rows) and rows["resnet18"]["dim"] == 512
    assert rows["vgg16"]["curated"] and not rows["resnet18"]["curated"]
    code, out, _ = run_main(capsys, "backbones", "--json")
    assert {r["name"] for r in json.loads(out)} == set(REGISTRY)
    with pytest.raises(NotFound, match="did you mean .*convnext_tiny"):
        get_spec("convnext_tinny")
    with pytest.raises(NotFound, match=r"^unknown backbone 'qqq'\. Expected a registry name \("):  # no close match
        get_spec("qqq")


def test_a_model_outside_the_curated_list_extracts_end_to_end(tmp_path):
    make_folder(tmp_path / "data", {"a": 2, "b": 2})
    summary = extract(ExtractOptions(data_dir=tmp_path / "data", dataset="d", backbone="resnet18", weights="random",
                                     size=64, workers=0, device="cpu"), FeatureStore(tmp_path / "home"))
    assert summary.extracted == 4 and summary.fingerprint.startswith("resnet18-")
    assert FeatureStore(tmp_path / "home").table("d", summary.fingerprint).features.shape == (4, 512)


def test_input_sizes_outside_what_a_backbone_takes_are_one_line_and_its_own_size_is_accepted():
    from extractor.backbones import MAX_SIZE, resolve_size
    from extractor.errors import HeadstartError

    assert resolve_size(get_spec("vit_b_16"), 224) == 224  # before: "expected an integer >= 224" for 224 itself
    with pytest.raises(HeadstartError, match="vit_b_16: it takes 224 only .*leave --size out"):
        resolve_size(get_spec("vit_b_16"), 150)
    assert resolve_size(get_spec("vgg16"), MAX_SIZE) == MAX_SIZE
    with pytest.raises(HeadstartError, match=f"expected an integer from 32 to {MAX_SIZE} \\(default 150\\)"):
        resolve_size(get_spec("vgg16"), MAX_SIZE + 1)
