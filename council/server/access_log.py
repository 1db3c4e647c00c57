"""One access-log line per request: method, path, status, milliseconds and the exchange's record id.

    POST /v1/chat/completions 200 412.3 ms rec_01J...

aiohttp calls ``AccessLogger.log`` after each response (``web.run_app(..., access_log_class=AccessLogger)``);
the lines go to the ``council.access`` logger at INFO (health probes at DEBUG), so ``--log-level warning``
silences them.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

PROBES = ("/health", "/livez", "/readyz", "/metrics")  # polled by monitors and load balancers: DEBUG


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        record = response.headers.get("x-council-record-id", "")
        level = logging.DEBUG if request.path in PROBES else logging.INFO
        self.logger.log(level, "%s %s %d %.1f ms%s", request.method, request.path, response.status, time * 1000,
                         f" {record}" if record else "")

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
