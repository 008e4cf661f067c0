"""--engine ray on a real local Ray cluster (started and stopped here): the same cache as the local
engine, killed workers and a killed driver, one-line errors."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extractor.augment import parse
from extractor.errors import HeadstartError
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import REPO, actor_pids, assert_one_line_error, make_folder, run_cli

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("raydata")
    make_folder(root / "d", {"red": 40, "green": 40, "blue": 30})
    (root / "d" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "d" / "blue" / "copy.jpg").write_bytes((root / "d" / "red" / "red_0000.jpg").read_bytes())
    return root / "d"


def options(data: Path, **kw) -> ExtractOptions:
    base = dict(data_dir=data, dataset="d", backbone="tiny", weights="random", batch_size=8, workers=1)
    return ExtractOptions(**{**base, **kw})


def cache(home: Path) -> tuple:
    store = FeatureStore(home)
    fp = store.catalog.dataset_summary("d")["fingerprints"][0][0]
    table = store.table("d", fp)
    return fp, store.catalog.members("d"), store.catalog.failures("d"), table


def test_ray_engine_gives_the_local_engines_cache_bit_for_bit(ray_cluster, data, tmp_path):
    local = extract(options(data), FeatureStore(tmp_path / "local"))
    events = []
    remote = extract(options(data, engine="ray", shard_rows=16), FeatureStore(tmp_path / "ray"),
                     progress=events.append)
    assert remote.fingerprint == local.fingerprint and remote.device == "ray"
    assert (remote.extracted, remote.failed, remote.duplicates) == (local.extracted, local.failed, local.duplicates)
    fp_l, members_l, failures_l, table_l = cache(tmp_path / "local")
    fp_r, members_r, failures_r, table_r = cache(tmp_path / "ray")
    assert fp_l == fp_r and members_l == members_r and failures_l == failures_r
    assert any("broken.jpg" in path for path, _ in failures_r)
    assert table_l.paths == table_r.paths and table_l.splits == table_r.splits
    assert np.array_equal(table_l.features, table_r.features)
    ray_shards = FeatureStore(tmp_path / "ray").catalog.shards(fp_r)
    assert max(s["rows"] for s in ray_shards) <= 16 and sum(s["rows"] for s in ray_shards) == local.extracted
    extracting = [e for e in events if e.phase == "extracting"]
    assert extracting[-1].done == extracting[-1].total == local.extracted + 1 and extracting[-1].failed == 1
    again = extract(options(data, engine="ray"), FeatureStore(tmp_path / "ray"))
    assert again.extracted == 0 and again.cached == local.extracted


def test_ray_engine_decodes_jpegs_on_the_actors_device_as_the_local_engine_does(ray_cluster, tmp_path):
    """--decode gpu on the Ray engine: decode tasks read, verify and sniff the bytes, the actors decode JPEG batches
    on their device (here CPU actors: libjpeg-turbo through torchvision, the path nvJPEG takes on a GPU); a PNG and a
    CMYK JPEG fall back to the CPU path per file, a damaged JPEG is a recorded failure. The cache equals the local
    engine's --decode gpu cache, under the device-decode fingerprint, not the CPU path's."""
    from tests.extractor.test_devicedecode import mixed_folder

    mixed_folder(tmp_path / "data")
    rng, exif = np.random.default_rng(6), Image.Exif()
    exif[0x0112] = 6  # turned a quarter: its orientation travels beside its bytes to the actor
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(tmp_path / "data" / "b" / "turned.jpg",
                                                                          "JPEG", exif=exif.tobytes())
    local = extract(options(tmp_path / "data", decode="gpu", device="cpu"), FeatureStore(tmp_path / "local"))
    remote = extract(options(tmp_path / "data", engine="ray", decode="gpu", shard_rows=4),
                     FeatureStore(tmp_path / "ray"))
    assert remote.fingerprint == local.fingerprint and remote.extracted == local.extracted == 10
    fp_l, members_l, failures_l, table_l = cache(tmp_path / "local")
    fp_r, members_r, failures_r, table_r = cache(tmp_path / "ray")
    assert members_l == members_r and failures_l == failures_r and [p for p, _ in failures_r] == ["a/broken.jpg"]
    assert table_l.paths == table_r.paths and np.array_equal(table_l.features, table_r.features)
    spec = FeatureStore(tmp_path / "ray").catalog.fingerprint(fp_r)["spec"]
    assert '"method": "tv-decode_jpeg-squash-bilinear-antialias/1@cpu"' in spec
    cpu = extract(options(tmp_path / "data", engine="ray", decode="cpu"), FeatureStore(tmp_path / "ray"))
    assert cpu.fingerprint != remote.fingerprint and cpu.extracted == 10  # the CPU path's pixels: its own vectors
    again = extract(options(tmp_path / "data", engine="ray", decode="gpu"), FeatureStore(tmp_path / "ray"))
    assert again.extracted == 0 and again.fingerprint == remote.fingerprint


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_actors_decode_with_nvjpeg_as_the_local_engine_on_cuda(ray_cluster, tmp_path):
    """On a GPU host: the local cluster gives its actors the GPU, so --decode gpu names @cuda, and the vectors
    are those of the local engine's nvJPEG path."""
    make_folder(tmp_path / "data", {"a": 6, "b": 6}, size=(500, 375))
    base = dict(backbone="vgg16", decode="gpu", amp="off")
    local = extract(options(tmp_path / "data", device="cuda", **base), FeatureStore(tmp_path / "local"))
    remote = extract(options(tmp_path / "data", engine="ray", **base), FeatureStore(tmp_path / "ray"))
    assert remote.fingerprint == local.fingerprint and remote.extracted == local.extracted == 12
    spec = FeatureStore(tmp_path / "ray").catalog.fingerprint(remote.fingerprint)["spec"]
    assert "@cuda" in spec
    (_, _, _, a), (_, _, _, b) = cache(tmp_path / "local"), cache(tmp_path / "ray")
    assert a.paths == b.paths and np.allclose(a.features, b.features, atol=1e-3)


def views(home: Path, count: int) -> dict[tuple[str, int], bytes]:
    """Each (content hash, view index) of the dataset's classic train views and its vector's bytes."""
    store = FeatureStore(home)
    fp = store.catalog.dataset_summary("d")["fingerprints"][0][0]
    features, shas, index = store.views("d", fp, parse("classic").text, count)
    return {(sha, int(i)): row.tobytes() for sha, i, row in zip(shas, index, features, strict=True)}


def test_ray_engine_computes_the_local_engines_views_bit_for_bit_and_only_the_missing_ones(ray_cluster, data,
                                                                                          tmp_path):
    local = extract(options(data, augment="classic", views=2), FeatureStore(tmp_path / "local"))
    events = []
    remote = extract(options(data, engine="ray", shard_rows=16, augment="classic", views=2),
                     FeatureStore(tmp_path / "ray"), progress=events.append)
    assert remote.views == local.views and remote.views["computed"] == 2 * remote.views["images"] > 0
    one, two = views(tmp_path / "local", 2), views(tmp_path / "ray", 2)
    assert len(one) == remote.views["computed"] and one == two
    store = FeatureStore(tmp_path / "ray")
    shards = [s for s in store.catalog.shards(remote.fingerprint) if s["recipe"]]
    assert max(s["rows"] for s in shards) <= 16 and sum(s["rows"] for s in shards) == len(two)
    made = [e for e in events if e.phase == "views"]
    assert made[-1].done == made[-1].total == len(two) and made[-1].failed == 0
    more = extract(options(data, engine="ray", augment="classic", views=3), store)  # view 2 of each image only
    assert more.extracted == 0 and more.views["computed"] == remote.views["images"]
    assert more.views["cached"] == len(two)
    extract(options(data, augment="classic", views=3), FeatureStore(tmp_path / "local"))
    assert views(tmp_path / "ray", 3) == views(tmp_path / "local", 3)


def test_a_killed_actor_is_restarted_and_the_extraction_completes(ray_cluster, data, tmp_path):
    killed: list[int] = []

    def kill_once(event) -> None:
        if event.phase == "extracting" and not killed and event.done < event.total:
            pids = actor_pids()
            assert pids, "no actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    summary = extract(options(data, engine="ray", shard_rows=8), FeatureStore(tmp_path / "h"), progress=kill_once)
    assert killed and not summary.stopped
    _, _, _, table = cache(tmp_path / "h")
    clean = extract(options(data), FeatureStore(tmp_path / "clean"))
    assert summary.extracted == clean.extracted == len(set(table.sha256))
    assert np.array_equal(table.features, cache(tmp_path / "clean")[3].features)


def test_kill_9_of_the_driver_leaves_a_readable_cache_and_the_rerun_completes(ray_cluster, data, tmp_path):
    home = tmp_path / "h"  # vgg16 at 64 px: slow enough here to be killed halfway
    args = [sys.executable, "-m", "service", "extract", str(data), "--dataset", "d", "--backbone", "vgg16",
            "--size", "64", "--weights", "random", "--batch-size", "4", "--shard-rows", "4", "--engine", "ray",
            "--ray-address", ray_cluster, "--home", str(home)]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "HEADSTART_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        catalog = home / "catalog.sqlite"
        if catalog.exists() and FeatureStore(home).catalog.shards():
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    store = FeatureStore(home)
    fp = store.catalog.dataset_summary("d")["fingerprints"][0][0]
    committed = {s["file"] for s in store.catalog.shards(fp)}
    table = store.table("d", fp)  # readable: every committed shard is whole
    assert 0 < len(table.paths) < 110
    on_disk = {f"features/{fp}/{p.name}" for p in (home / "features" / fp).glob("*.h5")}
    assert committed <= on_disk  # files never committed may be there; nothing reads them
    rerun = subprocess.run(args, cwd=REPO, env={**os.environ, "HEADSTART_OFFLINE": "1"}, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-800:]
    assert rerun.stderr == ""  # nothing of Ray's own logging reaches the user (it announced its log level once)
    leftovers = {f"features/{fp}/{p.name}" for p in (home / "features" / fp).iterdir() if p.name != "writer.lock"}
    assert leftovers == {s["file"] for s in store.catalog.shards(fp)}  # the rerun removed what was never committed
    extract(options(data, backbone="vgg16", size=64, batch_size=4), FeatureStore(tmp_path / "clean"))
    # equal up to float32 rounding: vgg16's CPU convolutions sum in an order that depends on the batch an image
    # is in, and a resumed run batches the images that were left (the tiny backbone above is bit-exact)
    np.testing.assert_allclose(store.table("d", fp).features, cache(tmp_path / "clean")[3].features,
                               rtol=1e-4, atol=1e-6)


def test_a_stopped_ray_run_keeps_what_it_committed_and_resumes(ray_cluster, data, tmp_path):
    events = []

    def stop() -> bool:
        return bool(events) and events[-1].phase == "extracting"

    first = extract(options(data, engine="ray", shard_rows=8), FeatureStore(tmp_path / "h"), progress=events.append,
                    should_stop=stop)
    assert first.stopped and 0 < first.extracted < 110
    second = extract(options(data, engine="ray"), FeatureStore(tmp_path / "h"))
    assert second.extracted == 110 - first.extracted and not second.stopped


def test_an_unreachable_ray_address_is_one_line_at_once(data, tmp_path):
    started = time.monotonic()  # (Ray itself waits minutes before it gives up on an address)
    common = ("extract", str(data), "--dataset", "d", "--backbone", "tiny", "--weights", "random", "--engine", "ray",
              "--home", str(tmp_path))
    done = run_cli(*common, "--ray-address", "127.0.0.1:9")
    assert_one_line_error(done.returncode, done.stderr, "cannot reach the Ray cluster at 127.0.0.1:9")
    assert time.monotonic() - started < 30
    done = run_cli(*common, env={"HEADSTART_RAY_ADDRESS": "nonsense"})
    assert_one_line_error(done.returncode, done.stderr, "expected HOST:PORT of the Ray head")


def test_a_cluster_that_wants_its_token_is_one_line_saying_how_to_give_it(ray_cluster, data, tmp_path):
    """Ray asks drivers for the cluster's token and, joining an explicit address, sends it only when told to
    (RAY_AUTH_MODE=token): without it, its core worker retried for 20 s with a log line each time (3 tries here)."""
    done = run_cli("extract", str(data), "--dataset", "d", "--backbone", "tiny", "--weights", "random", "--engine",
                   "ray", "--ray-address", ray_cluster, "--home", str(tmp_path),
                   env={"RAY_AUTH_MODE": "disabled", "RAY_NUM_REDIS_GET_RETRIES": "3"})
    assert_one_line_error(done.returncode, done.stderr, f"cannot join the Ray cluster at {ray_cluster}: it wants "
                                                        f"its authentication token; set RAY_AUTH_MODE=token")


def listening_addresses(pids: list[int]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses of the TCP sockets these processes listen on (from /proc)."""
    listening = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])  # 32-bit words in host (little-endian) order
                packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                listening[fields[9]] = ipaddress.ip_address(packed)
    found = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:  # gone meanwhile
            continue
        found |= {listening[link[8:-1]] for link in links if link.startswith("socket:[") and link[8:-1] in listening}
    return found


def ray_pids() -> list[int]:
    """The local Ray cluster's processes: its GCS, raylet, workers and this driver."""
    pids = [os.getpid()]
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"gcs_server" in cmdline or b"raylet" in cmdline or cmdline.startswith(b"ray::"):
            pids.append(int(entry.name))
    return pids


def test_a_ray_cluster_of_our_own_listens_on_the_loopback_interface_only(ray_cluster):
    assert ray_cluster.startswith("127.0.0.1:")
    found = listening_addresses(ray_pids())
    assert len(found) >= 1
    for address in found:  # IPv4, or IPv6 with the IPv4 address mapped in
        assert address.is_loopback or getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback, found


def test_without_ray_installed_the_engine_is_one_line(data, tmp_path):
    blocked = ("import sys; sys.modules['ray'] = None; from service.cli import main; "  # `import ray` fails
               f"sys.exit(main(['extract', {str(data)!r}, '--dataset', 'd', '--backbone', 'tiny', '--weights', "
               f"'random', '--engine', 'ray', '--home', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HEADSTART_OFFLINE": "1"})
    assert_one_line_error(done.returncode, done.stderr, "--engine ray needs Ray, which is not installed here")


def test_decode_and_hash_tasks_never_import_torch():
    """A Ray worker that only decodes or hashes loads the modules of its function: torch in them cost each such
    worker ~1.2 s before its first task and ~480 MB of peak RSS here (actors load torch themselves)."""
    probe = ("import sys, extractor.engine_ray, extractor.datasets, ray.data; "
             "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_ray_engine_refuses_what_it_does_not_do(data, tmp_path):
    with pytest.raises(HeadstartError, match="--decode gpu with --augment: views are made from the CPU path"):
        extract(options(data, engine="ray", decode="gpu", augment="classic", views=2), FeatureStore(tmp_path))
    with pytest.raises(HeadstartError, match="expected one of local, ray"):
        extract(options(data, engine="spark"), FeatureStore(tmp_path))
    with pytest.raises(HeadstartError, match="--decode 'nvdec': expected one of auto, cpu, gpu"):  # before a cluster
        extract(options(data, engine="ray", decode="nvdec"), FeatureStore(tmp_path))


def test_the_driver_commits_from_one_thread_while_others_read(ray_cluster, data, tmp_path):
    """Readers are never blocked while the Ray driver commits (the catalog is in WAL mode)."""
    home = tmp_path / "h"
    reads, waits, errors, stop = [], [], [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if (home / "catalog.sqlite").exists():
                started = time.monotonic()
                try:
                    reads.append(len(FeatureStore(home).catalog.shards()))
                except Exception as exc:  # a locked catalog would show here
                    errors.append(exc)
                waits.append(time.monotonic() - started)
            time.sleep(0.01)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        extract(options(data, engine="ray", shard_rows=8), FeatureStore(home))
    finally:
        stop.set()
        thread.join()
    assert not errors and reads and reads == sorted(reads) and max(reads) >= 1
    assert max(waits) < 1.0  # a read never waited on the driver's commits (WAL; busy_timeout would be 30 s)


def _slow_chunk(paths: list[str]) -> list[tuple[str, str]]:
    """A hashing task that takes a while and leaves a mark when it completes."""
    time.sleep(2.0)
    Path(paths[0] + ".done").write_text("")
    return [("0" * 64, "")] * len(paths)


def test_hashing_stopped_early_cancels_the_unfinished_ray_tasks_and_the_cluster_goes_on(ray_cluster, data,
                                                                                        tmp_path):
    from extractor.ray_cluster import RayMap

    chunks = [[str(tmp_path / f"chunk{i}")] for i in range(6)]
    results = RayMap()(_slow_chunk, chunks)
    assert next(results) == [("0" * 64, "")]
    results.close()  # what hash_items does when asked to stop
    time.sleep(3.0)  # long enough for any task left running to finish
    done = sorted(p.name for p in tmp_path.glob("*.done"))
    assert "chunk0.done" in done and "chunk5.done" not in done and len(done) <= 3, done
    stopped = extract(options(data, engine="ray"), FeatureStore(tmp_path / "h"), should_stop=lambda: True)
    assert stopped.stopped and stopped.extracted == 0
    # the cluster takes the next run (a second driver crashed in Ray when finished tasks were cancelled too)
    assert extract(options(data, engine="ray"), FeatureStore(tmp_path / "h")).extracted == 110


def test_the_commit_path_bench_runs_on_the_shipped_engine(ray_cluster, tmp_path):
    """bench/bench_ray.py's commit path swaps in an instant actor and no decoding; kept running against the engine
    (it broke once when the engine started reading the preprocessing of the fingerprint it is given)."""
    from bench.bench_ray import commit_path

    out = commit_path(64, 2, tmp_path)
    assert out["vectors"] == 64 and out["shards"] >= 1 and out["driver_commit_capacity_vectors_s"] > 0
