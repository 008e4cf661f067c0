"""User-facing errors: each carries one clear line (expected, received, what to do)."""


class HeadstartError(Exception):
    """An error the user can cause and fix; the CLI prints it as one line, the API as a 4xx."""

    status = 400


class NotFound(HeadstartError):
    """A named thing (dataset, head, backbone, job) does not exist."""

    status = 404


class Conflict(HeadstartError):
    """The request clashes with current state (a writer already running, a name taken)."""

    status = 409


class WeightsUnavailable(HeadstartError):
    """Pretrained weights are neither cached nor downloadable."""

    status = 503
