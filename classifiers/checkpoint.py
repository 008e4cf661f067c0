"""Fine-tuning checkpoints: after every epoch, the trainable stages, the head, the optimiser, the history and the
best epoch so far, written as a temp file, fsynced and renamed (a crash leaves the previous checkpoint whole).
Read back with `torch.load(weights_only=True)`: tensors and plain values only, never arbitrary objects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from extractor.durable import publish
from extractor.errors import HeadstartError

FILE = "checkpoint.pt"


class Checkpoint:
    """The checkpoint of fine-tuning head `name`: `config` says which run it belongs to."""

    def __init__(self, home: Path, name: str, config: dict) -> None:
        self.folder = Path(home) / "finetune" / name
        self.config = json.dumps(config, sort_keys=True)

    @property
    def path(self) -> Path:
        return self.folder / FILE

    def load(self, restart: bool = False) -> dict | None:
        """The saved state of this same run, or None to start afresh; another run's checkpoint is refused unless
        `restart` (then it is discarded)."""
        if not self.path.is_file():
            return None
        if restart:
            self.remove()
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint that cannot be read: say so, never guess
            raise HeadstartError(f"the fine-tuning checkpoint {self.path} cannot be read ({type(exc).__name__})",
                                 cli="pass --restart to discard it", api='send "restart": true to discard it') \
                from None
        if state.get("config") != self.config:
            saved = json.loads(state.get("config") or "{}")
            diff = sorted(k for k in set(saved) | set(json.loads(self.config))
                          if saved.get(k) != json.loads(self.config).get(k))
            raise HeadstartError(f"an unfinished fine-tuning of {self.folder.name!r} with other settings exists "
                                 f"(they differ in {', '.join(diff) or 'format'})",
                                 cli="rerun it with the same options to resume, or pass --restart to discard it",
                                 api='resend the same request to resume it, or send "restart": true')
        return state

    def save(self, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (FILE + ".tmp")
        torch.save({**state, "config": self.config}, tmp)
        publish(tmp, self.path)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
