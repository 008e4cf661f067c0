"""The device-decode path (`--decode gpu`) run with CPU decoding of the same byte batches, and on CUDA where there
is one; the worker default; decode modes in the fingerprint."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from extractor import workers
from extractor.decode import DecodeError, Limits, file_stat, preprocess
from extractor.devicedecode import HEAD_BYTES, ByteDataset, JpegReader, method, preprocess_on, to_batch
from extractor.errors import HeadstartError
from extractor.model import LoadedBackbone, decode_method, resolve
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import assert_one_line_error, make_folder, run_main
from tests.test_devices import cosines

CPU_BYTES = method(torch.device("cpu"))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


def opts(data, **kw) -> ExtractOptions:
    base = dict(data_dir=data, dataset="d", backbone="tiny", weights="random", workers=0, batch_size=4, device="cpu")
    return ExtractOptions(**{**base, **kw})


def mixed_folder(root) -> dict[str, str]:
    """JPEGs (RGB and greyscale), a PNG, a CMYK JPEG (CPU fallback), a corrupt JPEG; returns name -> kind."""
    make_folder(root, {"a": 3, "b": 3}, size=(120, 90))
    Image.new("L", (80, 60), 90).save(root / "a" / "grey.jpg", "JPEG")
    Image.new("RGB", (70, 50), (10, 200, 30)).save(root / "b" / "plain.png", "PNG")
    Image.new("CMYK", (60, 60), (0, 80, 160, 10)).save(root / "b" / "cmyk.jpg", "JPEG")
    data = bytearray((root / "a" / "a_0000.jpg").read_bytes())
    data[400:700] = b"\x00" * 300  # the header stays valid, the scan is damaged
    (root / "a" / "broken.jpg").write_bytes(bytes(data))
    return {"grey.jpg": "jpeg", "plain.png": "pixels", "cmyk.jpg": "pixels", "broken.jpg": "jpeg"}


def test_default_workers_follow_the_affinity_mask(monkeypatch):
    for cores, expected in (({0}, 1), ({0, 1}, 1), (set(range(16)), 15), (set(range(64)), 63)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, cores=cores: cores)
        assert workers.default_workers() == expected  # no fixed cap: a 16-core GPU host decodes on 15
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert workers.workers_for(None, 3, 32) == 1  # three new images: one batch, one worker
    assert workers.workers_for(None, 10_000, 32) == 15 and workers.workers_for(4, 10_000, 32) == 4
    assert workers.most_workers() == 64


def test_byte_batches_keep_order_fall_back_per_file_and_record_failures(tmp_path):
    kinds = mixed_folder(tmp_path / "data")
    files = sorted((tmp_path / "data").rglob("*.*"))
    import hashlib

    for known_stat in (False, True):  # a worker reads a JPEG's head only when its size and mtime are known
        jobs = [(hashlib.sha256(p.read_bytes()).hexdigest(), p, file_stat(p) if known_stat else None) for p in files]
        dataset = ByteDataset(jobs, 32, Limits())
        items = [dataset[i] for i in range(len(dataset))]
        for (_, kind, _), path in zip(items, files, strict=True):
            expected = kinds.get(path.name, "jpeg")  # sniffed from content, not from the name
            assert kind == expected or (path.name == "broken.jpg" and kind == "error"), path.name  # some Pillow
            # builds refuse the damaged file from its header already
        _check_batch(files, *to_batch(items[::-1], 32, torch.device("cpu"), Limits(), JpegReader(jobs, Limits())))


def _check_batch(files, order, batch, bad):
    broken = [i for i, p in enumerate(files) if p.name == "broken.jpg"]
    assert [i for i, _ in bad] == broken and isinstance(bad[0][1], DecodeError)  # nvJPEG/libjpeg refuse, Pillow too
    assert order == sorted(set(range(len(files))) - set(broken))
    assert batch.shape == (len(order), 32, 32, 3) and batch.dtype == torch.uint8
    for row, i in enumerate(order):  # each image's pixels are its own, decoded the device way
        expected = preprocess_on(files[i].read_bytes(), 32, Limits(), CPU_BYTES)
        assert np.array_equal(batch[row].numpy(), expected), files[i].name
    png = files.index(next(p for p in files if p.name == "plain.png"))
    assert np.array_equal(batch[order.index(png)].numpy(), preprocess(files[png].read_bytes(), 32, Limits()))


def test_the_device_path_pixels_are_close_to_the_cpu_path_but_their_own(tmp_path):
    make_folder(tmp_path, {"a": 4}, size=(500, 375))
    diffs = []
    for path in sorted(tmp_path.rglob("*.jpg")):
        data = path.read_bytes()
        cpu, dev = preprocess(data, 150, Limits()), preprocess_on(data, 150, Limits(), CPU_BYTES)
        diffs.append(np.abs(cpu.astype(int) - dev).mean())
    assert 0 < max(diffs) < 8  # the same picture (noisy test images: mean |diff| of a few levels), other pixels


def test_decode_modes_have_their_own_fingerprints_and_caches(tmp_path):
    mixed_folder(tmp_path / "data")
    store = FeatureStore(tmp_path / "home")
    cpu = extract(opts(tmp_path / "data", decode="cpu"), store)
    dev = extract(opts(tmp_path / "data", decode="gpu", workers=2), store)
    assert cpu.fingerprint != dev.fingerprint and dev.extracted == cpu.extracted == 9
    assert dict(dev.failures).keys() == dict(cpu.failures).keys() == {"a/broken.jpg"}
    spec = store.catalog.fingerprint(dev.fingerprint)["spec"]
    assert f'"method": "{CPU_BYTES}"' in spec
    again = extract(opts(tmp_path / "data", decode="gpu"), store)
    assert again.extracted == 0 and again.fingerprint == dev.fingerprint
    auto = extract(opts(tmp_path / "data", decode="auto"), store)  # a CPU device: auto is cpu
    assert auto.fingerprint == cpu.fingerprint and auto.extracted == 0
    tables = store.table("d", cpu.fingerprint), store.table("d", dev.fingerprint)
    assert tables[0].sha256 == tables[1].sha256
    assert cosines(tables[0].features, tables[1].features).min() > 0.98  # the same images, slightly other pixels
    # the vectors stored are those of each image's own device-path pixels, in order
    model = LoadedBackbone(resolve("tiny", "random", None, CPU_BYTES), "cpu", amp="off").setup()
    paths = {r[1]: tmp_path / "data" / r[0] for r in store.catalog.dataset_rows("d", dev.fingerprint)}
    direct = model.embed_arrays([preprocess_on(paths[s].read_bytes(), model.resolved.size, Limits(), CPU_BYTES)
                                 for s in tables[1].sha256])
    assert np.allclose(direct, tables[1].features, atol=1e-4)


def test_device_decode_refusals_are_one_line(tmp_path, capsys):
    make_folder(tmp_path / "data", {"a": 2, "b": 2})
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "h"), "--decode", "gpu",
                            "--augment", "crop", "--views", "2")
    assert_one_line_error(code, err, "--decode cpu")
    assert decode_method("cpu", "cpu") != decode_method("gpu", "cpu") == CPU_BYTES
    with pytest.raises(Exception, match="expected one of auto, cpu, gpu"):
        decode_method("nvjpeg", "cpu")


def test_a_head_on_device_decoded_features_predicts_with_the_same_pixels(tmp_path):
    from classifiers.persist import heads_dir
    from classifiers.predict import Predictor
    from classifiers.training import train_head

    make_folder(tmp_path / "data", {"a": 6, "b": 6})
    store = FeatureStore(tmp_path / "home")
    summary = extract(opts(tmp_path / "data", decode="gpu"), store)
    train_head(store, "d", "tiny", "logreg", "h")
    predictor = Predictor(heads_dir(store), "h", device="cpu")
    image = next((tmp_path / "data" / "a").iterdir()).read_bytes()
    assert predictor.resolved.fingerprint.id == summary.fingerprint
    assert np.array_equal(predictor.prepare(image), preprocess_on(image, 32, Limits(), CPU_BYTES))


@CUDA
def test_nvjpeg_features_match_the_cpu_byte_path(tmp_path):
    make_folder(tmp_path / "data", {"a": 6, "b": 6}, size=(500, 375))
    cuda, cpu = FeatureStore(tmp_path / "cuda"), FeatureStore(tmp_path / "cpu")
    got = extract(opts(tmp_path / "data", backbone="vgg16", device="cuda", decode="gpu", amp="off", workers=2), cuda)
    ref = extract(opts(tmp_path / "data", backbone="vgg16", decode="gpu", workers=2), cpu)
    assert got.extracted == ref.extracted == 12 and got.fingerprint != ref.fingerprint  # nvJPEG has its own identity
    a, b = cuda.table("d", got.fingerprint), cpu.table("d", ref.fingerprint)
    assert a.sha256 == b.sha256 and cosines(a.features, b.features).min() >= 0.999
    plain = FeatureStore(tmp_path / "plain")
    pil = extract(opts(tmp_path / "data", backbone="vgg16", decode="cpu"), plain)
    print("cosine nvJPEG vs Pillow path:", cosines(a.features, plain.table("d", pil.fingerprint).features).min())


@CUDA
def test_gpu_decodes_with_nvjpeg_on_cuda_and_auto_stays_on_the_cpu_path():
    assert decode_method("gpu", "cuda") == method(torch.device("cuda"))
    assert decode_method("auto", "cuda") == decode_method("cpu", "cuda") == decode_method("auto", "cpu")


def test_bad_image_bytes_in_a_batch_are_not_a_crash():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "JPEG")
    good = buf.getvalue()
    items = [(0, "jpeg", 1), (1, "jpeg", 1), (2, "error", DecodeError("empty file (0 bytes)"))]
    payloads = {0: good, 1: good[:60]}
    order, batch, bad = to_batch(items, 16, torch.device("cpu"), Limits(), lambda idx: [payloads[i] for i in idx])
    assert order == [0] and batch.shape == (1, 16, 16, 3) and sorted(i for i, _ in bad) == [1, 2]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_read_in_the_worker_is_applied_as_torchvision_does(orientation):
    import torchvision.io

    from extractor.devicedecode import _resize, prepare

    rng = np.random.default_rng(orientation)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes())
    data = buf.getvalue()
    assert prepare(data, 16, Limits()) == ("jpeg", orientation)
    reference = torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                           mode=torchvision.io.ImageReadMode.RGB, apply_exif_orientation=True)
    got = preprocess_on(data, 16, Limits(), CPU_BYTES)
    assert np.array_equal(got, _resize(reference, 16).numpy())
    # and the picture stands as Pillow turns it (the CPU path): the same orientation, close pixels
    cpu = preprocess(data, 16, Limits())
    assert np.abs(cpu.astype(int) - got).mean() < 8  # a wrong turn of this noise would differ by ~30+


def test_images_of_one_shape_are_resized_together_to_what_each_gets_alone():
    from extractor.devicedecode import _resize, _resize_all

    rng = np.random.default_rng(1)
    shapes = [(3, 40, 60), (3, 40, 60), (3, 33, 21), (3, 40, 60), (3, 33, 21)]
    images = [torch.from_numpy(rng.integers(0, 256, s, dtype=np.uint8)) for s in shapes]
    together = _resize_all([*images[:2], None, *images[2:]], 16)
    assert together[2] is None
    for alone, got in zip(images, together[:2] + together[3:], strict=True):
        assert torch.equal(_resize(alone, 16), got)


def test_features_of_both_decode_paths_resolve_to_the_cpu_path_without_asking_for_weights(tmp_path):
    make_folder(tmp_path / "data", {"a": 4, "b": 4})
    store = FeatureStore(tmp_path / "home")
    dev = extract(opts(tmp_path / "data", decode="gpu"), store)
    assert store.resolve("d", "tiny") == dev.fingerprint  # the one there is
    cpu = extract(opts(tmp_path / "data", decode="cpu"), store)
    assert store.resolve("d", "tiny") == cpu.fingerprint  # one weights, two decode paths: no "several weights"
    assert store.resolve("d", "tiny", "random") == cpu.fingerprint
    extract(opts(tmp_path / "data", weights="random:7"), store)
    with pytest.raises(HeadstartError, match="several weights"):  # other weights still ask which
        store.resolve("d", "tiny")


def _jobs(paths):
    import hashlib

    return [(hashlib.sha256(p.read_bytes()).hexdigest(), p, file_stat(p)) for p in paths]


def test_a_jpeg_head_longer_than_the_worker_reads_is_read_whole_and_keeps_its_orientation(tmp_path):
    from extractor.devicedecode import jpeg_orientation

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the device path turns it upright
    path = tmp_path / "long_head.jpg"
    Image.new("RGB", (90, 60), (200, 40, 40)).save(path, "JPEG", exif=exif, icc_profile=b"\x01" * (HEAD_BYTES + 5000))
    head = path.read_bytes()[:HEAD_BYTES]
    with pytest.raises(DecodeError):  # the markers run past the head: the worker cannot judge it from the head
        jpeg_orientation(head, Limits())
    jobs = _jobs([path])
    assert ByteDataset(jobs, 32, Limits())[0] == (0, "jpeg", 6)
    order, batch, bad = to_batch([(0, "jpeg", 6)], 32, torch.device("cpu"), Limits(), JpegReader(jobs, Limits()))
    assert order == [0] and not bad
    assert np.array_equal(batch[0].numpy(), preprocess_on(path.read_bytes(), 32, Limits(), CPU_BYTES))


def test_a_jpeg_changed_after_the_worker_saw_it_is_a_recorded_failure_not_other_pixels(tmp_path):
    make_folder(tmp_path / "data", {"a": 3}, size=(120, 90))
    files = sorted((tmp_path / "data").rglob("*.jpg"))
    jobs = _jobs(files)
    items = [ByteDataset(jobs, 32, Limits())[i] for i in range(3)]
    assert [kind for _, kind, _ in items] == ["jpeg"] * 3
    Image.new("RGB", (120, 90), (0, 0, 255)).save(files[1], "JPEG")  # other bytes under the same name
    os.utime(files[2], ns=(1, 1))  # the same bytes, another mtime: hashed again, and kept
    order, batch, bad = to_batch(items, 32, torch.device("cpu"), Limits(), JpegReader(jobs, Limits()))
    assert order == [0, 2] and [i for i, _ in bad] == [1]
    assert "changed" in str(bad[0][1]) and not bad[0][1].content  # the bytes themselves may be fine
    for row, i in enumerate(order):
        assert np.array_equal(batch[row].numpy(), preprocess_on(files[i].read_bytes(), 32, Limits(), CPU_BYTES))


def test_the_reader_reuses_its_buffer_and_each_batch_reads_its_own_bytes(tmp_path):
    make_folder(tmp_path / "data", {"a": 4}, size=(160, 120))
    files = sorted((tmp_path / "data").rglob("*.jpg"))
    read = JpegReader(_jobs(files), Limits())
    first = [bytes(b) for b in read([0, 1])]
    buffer = read.buffer
    second = read([2, 3])
    assert read.buffer is buffer  # no new buffer for a batch that fits
    assert first == [files[0].read_bytes(), files[1].read_bytes()]
    assert [bytes(b) for b in second] == [files[2].read_bytes(), files[3].read_bytes()]
