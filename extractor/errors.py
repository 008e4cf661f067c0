"""User-facing errors: each carries one clear line (expected, received, what to do)."""


class HeadstartError(Exception):
    """An error the user can cause and fix; the CLI prints it as one line, the API as a 4xx.

    `cli` and `api` are the "what to do" part in each front door's own words (a command, or a request);
    str() is the command-line form, `for_api()` the API's."""

    status = 400

    def __init__(self, message: str = "", cli: str = "", api: str = "") -> None:
        super().__init__(f"{message}; {cli}" if cli else message)
        self.message, self.cli, self.api = message, cli, api

    def for_api(self) -> str:
        if not self.cli and not self.api:
            return str(self)
        return f"{self.message}; {self.api}" if self.api else self.message


class NotFound(HeadstartError):
    """A named thing (dataset, head, backbone, job) does not exist."""

    status = 404


class Conflict(HeadstartError):
    """The request clashes with current state (a writer already running, a name taken)."""

    status = 409


class WeightsUnavailable(HeadstartError):
    """Pretrained weights are neither cached nor downloadable."""

    status = 503


class CacheDamaged(HeadstartError):
    """A committed shard file is missing or unreadable; the next extract recomputes its vectors."""

    status = 409


class StorageFull(HeadstartError):
    """The disk under the home is full (or over quota): nothing was half-written, retry when there is room."""

    status = 507


class TooBusy(HeadstartError):
    """A bounded resource (job queue, training slot) is full; retry after `retry_after` seconds."""

    status = 429
    retry_after = 5


class Diverged(HeadstartError):
    """Training produced non-finite numbers (too high a learning rate, extreme parameters)."""

    status = 422


class OverLimit(HeadstartError):
    """A request beyond what this server allows (a setting names the limit)."""

    status = 422


class Stopped(Exception):  # noqa: N818 - a request to stop, not an error
    """Raised between steps of long work (listing, hashing, epochs) when the caller asked it to stop."""
