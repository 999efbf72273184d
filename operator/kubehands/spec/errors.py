"""The one error of the derivation: a /start the request model accepts but the settings or the key refuse."""


class InvalidRequest(Exception):
    """Refused before anything is written; the gateway answers 422 with `detail`."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
