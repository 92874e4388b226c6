"""The live feed of member arrivals: server-sent events read from the pipeline's own data.

Each open feed polls the store's arrivals (a short, non-blocking read in the shared worker
thread pool, never a thread of its own) every ``feed_poll_seconds`` and sends what is new. It is
bounded three ways: at most ``feed_max_streams`` feeds at once (more get 503), each closes after
``feed_max_seconds`` (the browser's EventSource reconnects by itself and resumes from the last
event id it saw), and it stops as soon as the client goes away (a listener on the connection
cancels it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import anyio
import redis
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from facestream.services.api.errors import ApiError
from facestream.services.api.stores import StoreData

log = logging.getLogger(__name__)

BACKLOG: Final = 20
"""Arrivals sent first to a new feed (not to one resuming with ``Last-Event-ID``)."""
BATCH: Final = 200
KEEPALIVE_SECONDS: Final = 15.0
RETRY_MS: Final = 3000


class FeedSlots:
    """Counts the open feeds. Only touched on the event loop, so a plain counter is safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> None:
        if self.open >= self.limit:
            raise ApiError(503, "too_many_feeds", f"{self.limit} live feeds are open; retry later")
        self.open += 1

    def give_back(self) -> None:
        self.open -= 1


class _FeedResponse(StreamingResponse):
    """Gives its slot back however the stream ends (done, client gone, cancelled)."""

    def __init__(self, content: AsyncIterator[str], slots: FeedSlots) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # The stream stops the moment the client goes away (not at its next write): a
            # listener cancels it on http.disconnect, as Starlette does for older servers.
            async with anyio.create_task_group() as group:

                async def until_disconnected() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(until_disconnected)
                await self.stream_response(send)
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            self._slots.give_back()


def _event(event_id: str, payload: dict[str, object]) -> str:
    return f"id: {event_id}\nevent: arrival\ndata: {json.dumps(payload)}\n\n"


def open_feed(
    request: Request,
    data: StoreData,
    store: str,
    slots: FeedSlots,
    *,
    poll_seconds: float,
    max_seconds: float,
) -> StreamingResponse:
    """The SSE response of ``store``'s arrivals. Raises :class:`ApiError` 503 when full."""
    resume = request.headers.get("last-event-id") or None
    slots.take()

    async def events() -> AsyncIterator[str]:
        after = resume
        yield f"retry: {RETRY_MS}\n\n"
        deadline = time.monotonic() + max_seconds
        quiet_since = time.monotonic()
        first = after is None
        while time.monotonic() < deadline:
            try:
                batch = await anyio.to_thread.run_sync(
                    data.arrivals, store, after, BACKLOG if first else BATCH
                )
            except ValueError:
                # A Last-Event-ID that is not ours: start over from the latest arrivals.
                after, first = None, True
                continue
            except redis.RedisError as exc:
                # End this stream; the browser reconnects after RETRY_MS and resumes.
                log.warning("arrivals feed of %s: cannot read the store data: %s", store, exc)
                yield 'event: unavailable\ndata: {"reason": "store_data_unavailable"}\n\n'
                return
            first = False
            for arrival in batch:
                yield _event(arrival.id, arrival.as_dict())
                after = arrival.id
            if batch:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            await anyio.sleep(poll_seconds)

    return _FeedResponse(events(), slots)
