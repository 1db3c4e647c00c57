"""Council's errors. Library code raises these; only the edges (HTTP, CLI) turn them into user output."""

from __future__ import annotations


class CouncilError(Exception):
    """Base class. ``status`` and ``code`` say how the HTTP edge answers it."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def to_openai(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


class InvalidRequestError(CouncilError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(CouncilError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(CouncilError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLargeError(CouncilError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class OverloadedError(CouncilError):
    """Too many generations are already waiting; the client should retry later."""

    status = 503
    type = "overloaded_error"
    code = "overloaded"


class StartingError(CouncilError):
    """The server has not finished loading its models (or could not)."""

    status = 503
    type = "service_unavailable_error"
    code = "starting"


class ModelUnavailableError(CouncilError):
    """Every configured model for a request failed or timed out."""

    status = 503
    type = "service_unavailable_error"
    code = "models_unavailable"


class RequestTimeoutError(CouncilError):
    """No answer within ``server.request_timeout_seconds``; the generation was stopped."""

    status = 504
    type = "timeout_error"
    code = "request_timeout"


class StorageError(CouncilError):
    """The memory store could not durably write (disk full, read-only disk)."""

    status = 507
    type = "storage_error"
    code = "insufficient_storage"


class PromptError(CouncilError):
    """A template failed to parse or render and no earlier good version exists."""

    status = 500
    type = "server_error"
    code = "prompt_error"


class AdapterError(CouncilError):
    """An adapter folder is incomplete, corrupt or made for another base model."""

    status = 409
    type = "adapter_error"
    code = "adapter_invalid"
