"""Training as the service runs it, for requests and jobs alike: caps from settings, one training at a time
per device, a wall-time limit, and stop checks between epochs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from classifiers.heads import Monitor, defaults, get_head_class
from classifiers.training import train_head
from extractor.errors import OverLimit, Stopped, TooBusy
from extractor.store import FeatureStore
from service.settings import Settings


class TrainingSlot:
    """One training at a time on the service's device: requests get 429 when it is taken, jobs wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, wait: bool) -> Iterator[None]:
        if not self._lock.acquire(blocking=wait):
            raise TooBusy("a head is being trained on this server's device and one training runs at a time; retry "
                          "later, or send \"background\": true to queue it as a job")
        try:
            yield
        finally:
            self._lock.release()


def check_caps(kind: str, params: dict, settings: Settings) -> None:
    """Refuse parameters beyond the server's caps, naming the setting that sets each."""
    merged = {**defaults(get_head_class(kind)), **params}
    limits = []
    if isinstance(merged.get("epochs"), int):
        limits.append(("epochs", merged["epochs"], settings.max_epochs, "HEADSTART_MAX_EPOCHS"))
    if isinstance(merged.get("max_iter"), int):
        limits.append(("max_iter", merged["max_iter"], 10 * settings.max_epochs, "10 x HEADSTART_MAX_EPOCHS"))
    hidden = merged.get("hidden")
    if isinstance(hidden, list):
        limits.append(("hidden layers", len(hidden), settings.max_hidden_layers, "HEADSTART_MAX_HIDDEN_LAYERS"))
        limits.append(("hidden width", max(hidden, default=0), settings.max_hidden_width,
                       "HEADSTART_MAX_HIDDEN_WIDTH"))
    for name, value, most, setting in limits:
        if value > most:
            raise OverLimit(f"{name}={value}: this server allows at most {most} ({setting}); ask for less")


def check_finetune(store: FeatureStore, settings: Settings, request: dict) -> None:
    """Everything about a fine-tuning request that can be checked before it is queued."""
    from classifiers.params import FinetuneParams, check
    from extractor import augment
    from extractor.names import check_name

    check_name("head", request["name"])
    p = check("finetune", FinetuneParams, request.get("params") or {})
    if p.augment:
        augment.parse(p.augment)
    for name, value, most, setting in (("epochs", p.epochs, settings.max_epochs, "HEADSTART_MAX_EPOCHS"),
                                       ("batch_size", p.batch_size, settings.max_finetune_batch,
                                        "HEADSTART_MAX_FINETUNE_BATCH")):
        if value > most:
            raise OverLimit(f"{name}={value}: this server allows at most {most} ({setting}); ask for less")
    if store.catalog.dataset(request["dataset"]) is None:
        store.resolve(request["dataset"], request["backbone"])  # NotFound naming the known datasets


def check_train(store: FeatureStore, settings: Settings, request: dict) -> None:
    """Everything about a training request that can be checked before it runs (or is queued)."""
    cls = get_head_class(request["head"])
    params = request.get("params") or {}
    cls(**params)  # types and ranges
    check_caps(cls.kind, params, settings)
    store.resolve(request["dataset"], request["backbone"], request.get("weights"))


def train(store: FeatureStore, settings: Settings, request: dict, should_stop: Callable[[], bool] = lambda: False,
          on_epoch: Callable[[dict, int], None] = lambda row, epochs: None) -> dict:
    """Run one training under the wall-time limit; Stopped when `should_stop` says so; the manifest."""
    check_train(store, settings, request)
    deadline = time.monotonic() + settings.train_max_seconds
    timed_out = []

    def stop() -> bool:
        if time.monotonic() > deadline:
            timed_out.append(True)
            return True
        return should_stop()

    try:
        return train_head(store, request["dataset"], request["backbone"], request["head"], request["name"],
                          request.get("params") or {}, request.get("weights"), settings.device,
                          Monitor(should_stop=stop, on_epoch=on_epoch), views=int(request.get("views") or 0),
                          augment=request.get("augment"))
    except Stopped:
        if timed_out:
            raise OverLimit(f"training stopped after {settings.train_max_seconds:g} s, the limit of "
                            f"HEADSTART_TRAIN_MAX_SECONDS; ask for fewer epochs or a smaller head") from None
        raise
