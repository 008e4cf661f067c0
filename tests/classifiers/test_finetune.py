"""Fine-tuning (issue 12): only the last stages change, a killed run resumes to the same result, and the result is
a head like the others whose trunk is a feature extractor of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from classifiers.finetune import Request, finetune
from classifiers.persist import HeadCorrupt, head_dir, heads_dir, load
from extractor.decode import Limits, preprocess
from extractor.model import LoadedBackbone, resolve
from extractor.pipeline import ExtractOptions, extract
from extractor.stages import stages
from extractor.store import FeatureStore
from tests.conftest import REPO, assert_one_line_error, make_folder, run_main


def prepared(tmp_path, backbone: str = "tiny", size: int | None = None, counts: int = 8) -> FeatureStore:
    make_folder(tmp_path / "data", {"a": counts, "b": counts, "c": counts})
    store = FeatureStore(tmp_path / "home")
    extract(ExtractOptions(data_dir=tmp_path / "data", dataset="d", backbone=backbone, weights="random", size=size,
                           workers=0, device="cpu"), store)
    return store


def test_only_the_last_stages_change_and_frozen_batchnorm_stays():
    from classifiers.tuner import Tuner

    tuner = Tuner(resolve("efficientnet_lite0", "random", 32), 2, "cpu", 3, [16], 0.0, np.zeros(1280, np.float32),
                  np.ones(1280, np.float32))
    before = {k: v.clone() for k, v in tuner.trunk_state().items()}
    optimizer = torch.optim.Adam(tuner.parameter_groups(1e-2, 1e-2))
    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    tuner.train(True)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(tuner.logits(tuner.prefix(images)), labels).backward()
        optimizer.step()
    after = tuner.trunk_state()
    names = {id(t): n for n, t in tuner.backbone.model.state_dict(keep_vars=True).items()}
    all_stages = stages("efficientnet_lite0", tuner.backbone.model)
    for i, (stage, modules, _) in enumerate(all_stages):
        tensors = [names[id(t)] for t in modules.state_dict(keep_vars=True).values()]
        changed = [n for n in tensors if not torch.equal(after[n], before[n])]
        assert not [n for n in changed if "running_" in n or "num_batches" in n], stage  # BatchNorm statistics stay
        if i < len(all_stages) - 2:
            assert changed == [], (stage, changed[:3])  # frozen: nothing changes
        else:
            assert any("conv" in n and n.endswith("weight") for n in changed), stage  # trained
            assert any("_bn" in n and n.endswith("bias") for n in changed), stage  # BatchNorm's affine part too


KILLED = """
import sys
from pathlib import Path
from classifiers.finetune import Request, finetune
from extractor.store import FeatureStore
finetune(FeatureStore(sys.argv[1]), Request("d", "vgg16", "ft", params={"epochs": 6, "patience": 6, "unfreeze": 2,
         "lr": 1e-3, "batch_size": 4}, device="cpu", workers=0))
"""


def test_kill_9_mid_run_then_rerun_ends_identical_to_an_uninterrupted_run(tmp_path):
    for home in ("killed", "clean"):
        make_folder(tmp_path / "data", {"a": 6, "b": 6})
        extract(ExtractOptions(data_dir=tmp_path / "data", dataset="d", backbone="vgg16", size=32, weights="random",
                               workers=0, device="cpu"), FeatureStore(tmp_path / home))
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "killed")], cwd=REPO,
                            env={**os.environ, "HEADSTART_OFFLINE": "1"})
    checkpoint = tmp_path / "killed" / "finetune" / "ft" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists():  # at least one epoch finished
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(checkpoint, weights_only=True)
    assert 1 <= len(done["history"]) < 6
    request = Request("d", "vgg16", "ft", params={"epochs": 6, "patience": 6, "unfreeze": 2, "lr": 1e-3,
                                                  "batch_size": 4}, device="cpu", workers=0)
    resumed = finetune(FeatureStore(tmp_path / "killed"), request)
    clean = finetune(FeatureStore(tmp_path / "clean"), request)
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in m["history"]] for m in (resumed, clean)]
    assert untimed[0] == untimed[1] and resumed["fingerprint"]["id"] == clean["fingerprint"]["id"]
    assert resumed["weights_sha256"] == clean["weights_sha256"]
    assert not checkpoint.exists()  # a finished run leaves no checkpoint


def test_the_result_is_a_head_like_the_others(tmp_path, capsys):
    store = prepared(tmp_path)
    home = ["--home", str(store.home)]
    code, out, err = run_main(capsys, "finetune", "--dataset", "d", "--backbone", "tiny", "--name", "ft",
                              "--epochs", "3", "--unfreeze", "1", "--lr", "0.01", "--augment", "crop", "--workers",
                              "0", "--json", *home)
    assert code == 0, err
    result = json.loads(out)
    assert result["fingerprint"] != store.resolve("d", "tiny", "random") and result["metrics"]["test"]["n"] > 0
    code, out, _ = run_main(capsys, "evaluate", "ft", "--json", *home)
    assert code == 0 and json.loads(out)["metrics"]["n"] == result["metrics"]["test"]["n"]
    image = sorted((tmp_path / "data" / "b").iterdir())[0]
    code, out, _ = run_main(capsys, "predict", "ft", str(image), "--json", *home)
    assert code == 0 and json.loads(out)[0]["top"]
    code, out, _ = run_main(capsys, "heads", *home)
    assert "mlp+trunk" in out
    trunk = head_dir(heads_dir(store), "ft") / "trunk.safetensors"
    data = bytearray(trunk.read_bytes())
    data[-10] ^= 0xFF
    trunk.write_bytes(bytes(data))
    with pytest.raises(HeadCorrupt, match="trunk.safetensors is missing or does not match"):
        load(heads_dir(store), "ft")


def test_extract_with_the_fine_tuned_trunk_equals_its_direct_forward(tmp_path, capsys):
    store = prepared(tmp_path)
    finetune(store, Request("d", "tiny", "ft", params={"epochs": 2, "unfreeze": 1, "lr": 0.01}, device="cpu",
                            workers=0))
    other = FeatureStore(tmp_path / "other")  # a fresh home: nothing of the fine-tuned features is cached there
    trunk = head_dir(heads_dir(store), "ft") / "trunk.safetensors"
    summary = extract(ExtractOptions(data_dir=tmp_path / "data", dataset="d", backbone="tiny", weights=str(trunk),
                                     workers=0, device="cpu"), other)
    assert summary.extracted == 24 and summary.fingerprint != store.resolve("d", "tiny", "random")
    assert summary.fingerprint == store.resolve("d", "tiny", "head:ft")  # head:NAME is that trunk file
    table = other.table("d", summary.fingerprint)
    backbone = LoadedBackbone(resolve("tiny", str(trunk)), "cpu").setup()
    images = [preprocess((tmp_path / "data" / p).read_bytes(), 32, Limits()) for p in table.paths]
    direct = backbone.embed_arrays(images)
    assert np.allclose(direct, table.features, atol=1e-6)
    code, out, _ = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                            "--weights", "head:ft", "--json", "--home", str(store.home))
    assert code == 0 and json.loads(out)["extracted"] == 0  # already cached by the fine-tuning run


def test_bad_parameters_are_one_line_errors(tmp_path, capsys):
    store = prepared(tmp_path)
    base = ["finetune", "--dataset", "d", "--backbone", "tiny", "--name", "x", "--home", str(store.home)]
    for extra, expected in ((["--lr", "0"], "finetune parameter lr=0.0: expected a number > 0"),
                            (["--unfreeze", "3"], "--unfreeze 3: tiny has 2 stages (block1, block2); expected 1 to 2"),
                            (["--epochs", "0"], "finetune parameter epochs=0"),
                            (["--hidden", "big"], "finetune parameter hidden=\"big\""),
                            (["--augment", "swirl"], "augment term 'swirl'"),
                            (["--weights", "head:nope"], "there is no head 'nope'"),
                            (["--workers", "-3"], "--workers -3: expected an integer from 0"),
                            (["--workers", "100000"], "--workers 100000: expected an integer from 0")):
        code, _, err = run_main(capsys, *base, *extra)
        assert_one_line_error(code, err, expected)


def test_without_a_backbone_it_fine_tunes_the_one_the_dataset_has(tmp_path, capsys):
    store = prepared(tmp_path)  # tiny features only: vgg16 (the default) would need ImageNet weights
    code, out, err = run_main(capsys, "finetune", "--dataset", "d", "--name", "ft", "--epochs", "1", "--unfreeze",
                              "1", "--workers", "0", "--home", str(store.home))
    assert code == 0, err
    assert out.startswith("fine-tuned tiny (last 1 stages)")
    assert load(heads_dir(store), "ft")[1]["backbone"] == "tiny"


def test_ctrl_c_keeps_the_best_epoch_so_far_and_the_checkpoint(tmp_path):
    from classifiers.heads import Monitor

    store = prepared(tmp_path)
    epochs = []

    def interrupt(row: dict, total: int) -> None:
        epochs.append(row["epoch"])
        if len(epochs) == 2:
            raise KeyboardInterrupt

    request = Request("d", "tiny", "ft", params={"epochs": 10, "patience": 10, "unfreeze": 1, "lr": 0.01,
                                                 "augment": None}, device="cpu", workers=0)
    with pytest.raises(KeyboardInterrupt):
        finetune(store, request, Monitor(on_epoch=interrupt))
    head, manifest = load(heads_dir(store), "ft")  # saved with the best epoch so far
    assert manifest["finetune"]["epochs_run"] == 2 and manifest["trunk"] == "trunk.safetensors"
    assert (store.home / "finetune" / "ft" / "checkpoint.pt").is_file()  # the run can still be resumed
    resumed = finetune(store, request)
    assert resumed["finetune"]["epochs_run"] == 10
