"""uvicorn's WebSocket protocol, answering the handshakes it would leave unanswered.

websockets (which parses the handshake in uvicorn's default `websockets-sansio` protocol) refuses a
request line or a header line longer than 8 KiB, or more than 128 headers, and queues a 414/431 answer
that uvicorn never sends: the client then waits until it gives up, while the connection keeps its headers
in memory. `kubehands gateway` runs this subclass instead, which sends that status with a JSON `detail`
(as every other answer of the gateway) and closes the connection.
"""

import json
from http import HTTPStatus

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders


def _refusal(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, RequestLineTooLong):
        return 414, "request line too long for a WebSocket handshake"
    if isinstance(exc, HeaderLineTooLong | TooManyHeaders):
        return 431, "request headers too large for a WebSocket handshake (at most 128, each under 8 KiB)"
    return 400, "not a valid WebSocket handshake"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        refused = self.conn.handshake_exc
        if refused is None or self.handshake_initiated or self.transport.is_closing():
            return
        status, detail = _refusal(refused)
        self.conn.data_to_send()  # drop websockets' own plain-text answer
        body = json.dumps({"detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
