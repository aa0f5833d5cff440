"""A tiny imitation of the few kube-apiserver endpoints the load generator uses, on 127.0.0.1.

For *unit-level* checks of the generator only (rate accuracy, accounting, cleanup) and for the
generator's own throughput benchmark: it has no etcd, no admission, no audit pipeline. It fakes
``apiserver_audit_event_total`` / ``apiserver_audit_level_total`` as "2 events per request" so
the metrics plumbing can be exercised. Everything real is proven against the real local
kube-apiserver (``loadgen.local``).

Endpoints: ``POST/GET(list, watch)/DELETE(collection) /api/v1/namespaces/{ns}/{configmaps|secrets}``,
``GET/PUT/PATCH/DELETE .../{name}``, ``POST /api/v1/namespaces``, ``DELETE /api/v1/namespaces/{ns}``,
``GET /metrics``. With ``trivial=True`` every request gets ``200 {}`` (the benchmark target).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from typing import Any

from aiohttp import web

from audit_tune.loadgen.eventloop import loop_factory


class FakeAPIServer:
    """Run with ``url = FakeAPIServer().start()`` (thread) and ``.stop()``; state in ``.objects``."""

    def __init__(self, trivial: bool = False, latency: float = 0.0) -> None:
        self.trivial = trivial
        self.latency = latency
        self.namespaces: set[str] = set()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests = 0
        self.by_verb: dict[str, int] = {}
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        if self.trivial:
            app.router.add_route("*", "/{tail:.*}", self._trivial)
            return app
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/api/v1/namespaces", self._ns_create)
        app.router.add_delete("/api/v1/namespaces/{ns}", self._ns_delete)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/{res}", self._collection)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/{res}/{name}", self._item)
        return app

    def _count(self, verb: str) -> None:
        self.requests += 1
        self.by_verb[verb] = self.by_verb.get(verb, 0) + 1

    async def _trivial(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        return web.Response(body=b"{}", content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        n = self.requests
        text = ("# TYPE apiserver_audit_event_total counter\n"
                f"apiserver_audit_event_total {2 * n}\n"
                "# TYPE apiserver_audit_error_total counter\n"
                'apiserver_audit_error_total{plugin="buffered"} 0\n'
                "# TYPE apiserver_audit_level_total counter\n"
                f'apiserver_audit_level_total{{level="Metadata"}} {n}\n'
                "# TYPE apiserver_audit_requests_rejected_total counter\n"
                "apiserver_audit_requests_rejected_total 0\n")
        return web.Response(text=text)

    async def _ns_create(self, request: web.Request) -> web.Response:
        doc = await request.json()
        name = doc["metadata"]["name"]
        if name in self.namespaces:
            return web.json_response({"kind": "Status", "reason": "AlreadyExists"}, status=409)
        self.namespaces.add(name)
        return web.json_response(doc, status=201)

    async def _ns_delete(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        if ns not in self.namespaces:
            return web.json_response({"kind": "Status"}, status=404)
        self.namespaces.discard(ns)
        return web.json_response({"kind": "Namespace", "status": {"phase": "Terminating"}})

    def _selected(self, ns: str, res: str, selector: str | None) -> list[tuple[str, str, str]]:
        want = dict(x.split("=", 1) for x in selector.split(",")) if selector else {}
        return [k for k, o in self.objects.items() if k[0] == ns and k[1] == res
                and all(o["metadata"].get("labels", {}).get(a) == b for a, b in want.items())]

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        ns, res = request.match_info["ns"], request.match_info["res"]
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.method == "POST":
            self._count("create")
            if ns not in self.namespaces:
                return web.json_response({"kind": "Status", "reason": "NotFound"}, status=404)
            doc = json.loads(await request.read())
            key = (ns, res, doc["metadata"]["name"])
            if key in self.objects:
                return web.json_response({"kind": "Status", "reason": "AlreadyExists"}, status=409)
            self.objects[key] = doc
            return web.json_response(doc, status=201)
        sel = request.query.get("labelSelector")
        if request.method == "DELETE":
            self._count("deletecollection")
            for k in self._selected(ns, res, sel):
                del self.objects[k]
            return web.json_response({"kind": "List", "items": []})
        if request.query.get("watch") in ("1", "true"):
            self._count("watch")
            resp = web.StreamResponse()
            await resp.prepare(request)
            await asyncio.sleep(min(float(request.query.get("timeoutSeconds", "1")), 2.0))
            await resp.write_eof()
            return resp
        self._count("list")
        items = [self.objects[k] for k in self._selected(ns, res, sel)]
        limit = int(request.query.get("limit", "0") or 0)
        return web.json_response({"kind": "List", "items": items[:limit] if limit else items})

    async def _item(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["res"], request.match_info["name"])
        if self.latency:
            await asyncio.sleep(self.latency)
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method, "other")
        self._count(verb)
        body = await request.read()
        if key not in self.objects:
            return web.json_response({"kind": "Status", "reason": "NotFound"}, status=404)
        if verb == "delete":
            return web.json_response(self.objects.pop(key))
        if verb == "update":
            self.objects[key] = json.loads(body)
        elif verb == "patch":
            self.objects[key].setdefault("metadata", {}).setdefault("annotations", {}).update(
                json.loads(body).get("metadata", {}).get("annotations", {}))
        return web.json_response(self.objects[key])

    # ------------------------------------------------------------------ thread runner
    def start(self, port: int = 0) -> str:
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True, name="fake-apiserver")
        self._thread.start()
        self._ready.wait(15)
        return self.url

    def _run(self, port: int) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        self._ready.set()
        loop.run_until_complete(self._stop.wait())
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


def serve_forever(port: int = 0, trivial: bool = True, workers: int = 1) -> None:  # pragma: no cover - bench helper
    """Foreground server for the benchmark; prints its URL as the first stdout line.

    ``trivial``: aiohttp's low-level ``web.Server`` (no router, no app) answering ``200 {}``, the
    cheapest aiohttp server; ``workers`` > 1 forks that many processes on one SO_REUSEPORT port,
    so the target is not the bottleneck when measuring the generator.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    sock.listen(4096)

    async def trivial_handler(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=b"{}", content_type="application/json")

    async def main(s: socket.socket) -> None:
        if trivial:
            _server = await asyncio.get_running_loop().create_server(web.Server(trivial_handler, access_log=None),
                                                                    sock=s, backlog=4096)
        else:
            runner = web.AppRunner(FakeAPIServer().app(), access_log=None)
            await runner.setup()
            await web.SockSite(runner, s, backlog=4096).start()
        await asyncio.Event().wait()

    def run(s: socket.socket) -> None:
        with asyncio.Runner(loop_factory=loop_factory()) as r:
            r.run(main(s))

    for _ in range(max(1, workers) - 1):
        if os.fork() == 0:
            s2 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s2.bind(("127.0.0.1", port))
            s2.listen(4096)
            run(s2)
            os._exit(0)
    print(f"http://127.0.0.1:{port}", flush=True)
    run(sock)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description="fake/trivial apiserver on 127.0.0.1 (unit tests and bench only)")
    ap.add_argument("--full", action="store_true", help="imitate the configmap/secret endpoints (default: trivial 200 {})")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    serve_forever(a.port, trivial=not a.full, workers=a.workers)
