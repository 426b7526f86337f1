"""Attack run: hostile clients against a real uvicorn on 127.0.0.1, surface by surface (issue 25), repeatable.

Starts ``uvicorn server.main:app`` as run_sam.sh does (tiny preset, random weights, CPU, ``SAM_MAX_SESSIONS=4``)
with a media root holding a 1280x720 clip and hostile entries (symlink loops, names that are not UTF-8, a named
pipe, links and hard links leading outside), then attacks:

- ``listing``: ``GET /media/videos`` over the hostile entries;
- ``admission``: bursts of concurrent ``/track/start`` (twice the cap with distinct ids, then with one id, with
  failing starts among them), the open sessions sampled throughout;
- ``streams``: streamed propagations whose reader never reads (a 2 KB receive buffer), then cancelled,
  stopped, or left to the send timeout; each must give its session back (usable or gone) within 60 s;
- ``methods``: requests with invented HTTP methods (some 20,000 characters long), then the ``/metrics`` size;
- ``paths``: paths outside the media roots (missing, readable, unreadable, loops, symlinks into ``/proc``, a hard
  link) on ``/track/start`` and ``/media/frame``: how many different answers they get;
- ``frames``: concurrent ``/media/frame`` at scattered indices, and a video over the frame limit;
- ``headers``: 200 KB request heads and requests that are not HTTP.

Prints per surface the requests, status counts, 5xx, hangs (no answer within ``--hang-s``) and resets (the
connection dropped without an answer), then the sessions seen against the cap, the ``/metrics`` size, and the
server's RSS: at start, the baseline after a warm-up (the video predictor built, one session opened and
closed), the peak (sampled every 20 ms) and after the run.

    .venv/bin/python bench/attack.py            # the full run: 10,000 invented methods, 20 admission rounds
    .venv/bin/python bench/attack.py --smoke    # seconds-long: a few of each (the quick suite runs it)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import shutil
import string
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.live_server import rss_mb, start_server  # noqa: E402
from bench.video_memory import RssSampler, write_clip  # noqa: E402

CAP = 4
OUTSIDE = "video_path: outside the media roots (SAM_MEDIA_ROOTS)"


def stalled_stream(url: str, sid: str) -> socket.socket:
    """POST a streamed propagation of session ``sid`` over a socket with a 2 KB receive buffer, never read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    # Ethernet-sized segments: with loopback's 64 KB segments the kernel would buffer megabytes for the reader.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.connect((host, int(port)))
    body = json.dumps({"session_id": sid, "max_frames": -1, "stream": True})
    sock.sendall(
        f"POST /track/propagate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    return sock


@dataclass
class Tally:
    """What one surface got back."""

    statuses: Counter = field(default_factory=Counter)
    hangs: int = 0
    resets: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, status: int) -> None:
        self.statuses[status] += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.hangs + self.resets

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


@dataclass
class Attack:
    url: str
    pid: int
    media: Path
    outside: Path
    hang_s: float
    tallies: dict[str, Tally] = field(default_factory=dict)
    max_sessions_seen: float = 0.0

    def tally(self, surface: str) -> Tally:
        return self.tallies.setdefault(surface, Tally())

    # ------------------------------------------------------------------ transport
    async def request(
        self, client: httpx.AsyncClient, surface: str, method: str, path: str, **kw
    ) -> httpx.Response | None:
        tally = self.tally(surface)
        try:
            response = await client.request(method, path, timeout=self.hang_s, **kw)
        except httpx.TimeoutException:
            tally.hangs += 1
            return None
        except httpx.TransportError:
            tally.resets += 1
            return None
        tally.add(response.status_code)
        return response

    async def raw(self, surface: str, data: bytes) -> bytes | None:
        """One request on its own connection; the answer read until the server closes it."""
        tally = self.tally(surface)
        host, port = self.url.removeprefix("http://").split(":")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), self.hang_s)
            writer.write(data)
            answer = await asyncio.wait_for(reader.read(-1), self.hang_s)
            writer.close()
        except TimeoutError:
            tally.hangs += 1
            return None
        except OSError:
            tally.resets += 1
            return None
        if not answer.startswith(b"HTTP/1.1 "):
            tally.resets += 1
            return None
        tally.add(int(answer[9:12]))
        return answer

    def open_sessions(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith("sam3_tracking_sessions_open "):
                return float(line.split()[1])
        return 0.0

    # ------------------------------------------------------------------ surfaces
    async def listing(self, client: httpx.AsyncClient, rounds: int) -> None:
        await asyncio.gather(*(self.request(client, "listing", "GET", "/media/videos") for _ in range(rounds)))

    async def admission(self, client: httpx.AsyncClient, rounds: int) -> None:
        clip = str(self.media / "clip.mp4")
        failing = [str(self.media / "pipe.mp4"), "/etc/passwd", str(self.media / "loop.mp4")]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                self.max_sessions_seen = max(self.max_sessions_seen, self.open_sessions())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for r in range(rounds):
                ids = [f"a{r}_{i}" for i in range(2 * CAP)]
                bodies = [{"video_path": clip, "session_id": s} for s in ids]
                bodies += [{"video_path": path, "session_id": f"f{r}_{i}"} for i, path in enumerate(failing)]
                answers = await asyncio.gather(
                    *(self.request(client, "admission", "POST", "/track/start", json=b) for b in bodies)
                )
                admitted = sum(1 for a in answers if a is not None and a.status_code == 200)
                if admitted > CAP:
                    self.tally("admission").notes.append(f"round {r}: {admitted} sessions admitted (cap {CAP})")
                await self.stop_sessions(client, ids)
                twins = await asyncio.gather(
                    *(
                        self.request(
                            client, "admission", "POST", "/track/start", json={"video_path": clip, "session_id": "twin"}
                        )
                        for _ in range(2 * CAP)
                    )
                )
                codes = sorted(a.status_code for a in twins if a is not None)
                if codes != [200] + [409] * (2 * CAP - 1):
                    self.tally("admission").notes.append(f"round {r}: one id {2 * CAP} times gave {codes}")
                await self.stop_sessions(client, ["twin"])
        finally:
            stop.set()
            sampler.join()

    async def stop_sessions(self, client: httpx.AsyncClient, ids: list[str]) -> None:
        await asyncio.gather(
            *(self.request(client, "admission", "POST", "/track/stop", json={"session_id": s}) for s in ids)
        )

    async def busy(self, client: httpx.AsyncClient, sid: str) -> bool | None:
        """True while a propagation holds the session, False when it is free, None when it is gone."""
        answer = await self.request(
            client, "streams", "POST", "/track/remove_object", json={"session_id": sid, "obj_id": 999}
        )
        if answer is None or answer.status_code == 404:
            return None
        return answer.status_code == 409

    async def frames_propagated(self, client: httpx.AsyncClient) -> float:
        for line in (await client.get("/metrics", timeout=self.hang_s)).text.splitlines():
            if line.startswith("sam3_frames_propagated_total "):
                return float(line.split()[1])
        return 0.0

    async def wait_stalled(self, client: httpx.AsyncClient, ids: list[str], quiet_s: float, limit_s: float) -> int:
        """Wait until every session propagates, then until no frame was computed for ``quiet_s`` (the readers'
        buffers are full) or ``limit_s`` passed; returns how many sessions are still propagating."""
        started = time.monotonic()
        while not all([await self.busy(client, sid) for sid in ids]) and time.monotonic() - started < limit_s:
            await asyncio.sleep(0.2)
        done, changed = await self.frames_propagated(client), time.monotonic()
        while time.monotonic() - changed < quiet_s and time.monotonic() - started < limit_s:
            await asyncio.sleep(0.2)
            if (now := await self.frames_propagated(client)) != done:
                done, changed = now, time.monotonic()
        return sum([bool(await self.busy(client, sid)) for sid in ids])

    async def streams(self, client: httpx.AsyncClient, send_timeout_s: float, num_frames: int) -> None:
        """Streams whose readers never read, ended by cancel, stop or the send timeout."""
        tally = self.tally("streams")
        clip = str(self.media / "clip.mp4")
        for ending in ("cancel", "stop", "send timeout"):
            ids = [f"s_{ending.replace(' ', '_')}_{i}" for i in range(CAP)]
            for sid in ids:
                for path, body in (
                    ("/track/start", {"video_path": clip, "session_id": sid}),
                    ("/track/prompt", {"session_id": sid, "frame_idx": 0, "points": [[600, 300]]}),
                ):
                    await self.request(client, "streams", "POST", path, json=body)
            before = await self.frames_propagated(client)
            sockets = [stalled_stream(self.url, sid) for sid in ids]
            # stalled: no frame computed for a while, well within the send timeout (which starts at the stall)
            stalled = await self.wait_stalled(client, ids, quiet_s=send_timeout_s / 4, limit_s=send_timeout_s / 2)
            computed = await self.frames_propagated(client) - before
            started = time.monotonic()
            if ending != "send timeout":
                for sid in ids:
                    await self.request(client, "streams", "POST", f"/track/{ending}", json={"session_id": sid})
            waits = []
            for sid in ids:
                limit = send_timeout_s + 60
                while (state := await self.busy(client, sid)) and time.monotonic() - started < limit:
                    await asyncio.sleep(0.1)
                if state:
                    tally.hangs += 1
                    tally.notes.append(f"{ending}: session {sid} still busy after {time.monotonic() - started:.0f} s")
                waits.append(time.monotonic() - started)
            tally.notes.append(
                f"{ending}: {stalled} of {len(ids)} streams stalled ({computed:.0f} of {len(ids) * num_frames} frames "
                f"computed), every session free or gone {max(waits):.1f} s later"
            )
            for sock in sockets:
                sock.close()
            await self.stop_sessions(client, ids)

    async def methods(self, count: int, concurrency: int) -> None:
        rng = random.Random(0)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            length = 20_000 if i % 100 == 0 else rng.randint(3, 40)
            method = "".join(rng.choice(string.ascii_uppercase) for _ in range(length))
            if i % 10 == 0:  # a known method on an invented path (httptools refuses invented methods itself)
                method = "GET"
            path = "/health" if i % 2 else f"/nowhere/{i}"
            async with semaphore:
                await self.raw("methods", f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())

        await asyncio.gather(*(one(i) for i in range(count)))

    async def paths(self, client: httpx.AsyncClient, rounds: int) -> None:
        outside_paths = [
            "/etc/passwd",
            "/nonexistent/clip.mp4",
            str(self.outside / "clip.mp4"),
            str(self.outside / "locked" / "clip.mp4"),
            str(self.outside / "loop.mp4"),
            "~root/clip.mp4",
            "~nosuchuser/clip.mp4",
            *(str(self.media / name) for name in ("to_cwd", "to_fd", "to_clip", "to_loop")),
        ]
        answers = set()
        for _ in range(rounds):
            for path in outside_paths:
                for method, route, kw in (
                    ("POST", "/track/start", {"json": {"video_path": path}}),
                    ("GET", "/media/frame", {"params": {"video_path": path}}),
                ):
                    response = await self.request(client, "paths", method, route, **kw)
                    if response is not None:
                        answers.add((response.status_code, response.text))
            hardlink = await self.request(
                client, "paths", "POST", "/track/start", json={"video_path": str(self.media / "hardlink.mp4")}
            )
            if hardlink is not None and hardlink.status_code != 403:
                self.tally("paths").notes.append(f"hard link answered {hardlink.status_code}")
        self.tally("paths").notes.append(f"{len(answers)} different answer(s) for {len(outside_paths)} paths outside")
        if answers != {(403, json.dumps({"detail": OUTSIDE}, separators=(",", ":")))}:
            self.tally("paths").notes.append(f"answers: {sorted(answers)[:3]}")

    async def frames(self, client: httpx.AsyncClient, count: int, num_frames: int) -> None:
        rng = random.Random(1)
        clip = str(self.media / "clip.mp4")
        started = time.monotonic()
        await asyncio.gather(
            *(
                self.request(
                    client,
                    "frames",
                    "GET",
                    "/media/frame",
                    params={"video_path": clip, "frame_idx": rng.randrange(num_frames)},
                )
                for _ in range(count)
            )
        )
        self.tally("frames").notes.append(f"{count} concurrent frames in {time.monotonic() - started:.1f} s")
        await self.request(client, "frames", "GET", "/media/frame", params={"video_path": str(self.media / "long.mp4")})

    async def headers(self, rounds: int) -> None:
        for _ in range(rounds):
            await self.raw("headers", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
            await self.raw("headers", b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Many: b\r\n" * 8000 + b"\r\n")
            await self.raw("headers", b"NOT HTTP AT ALL\r\n\r\n")


def prepare_media(media: Path, outside: Path, frames: int) -> None:
    """The clip, an over-limit clip, and hostile entries: loops, names that are not UTF-8, a named pipe, links
    and a hard link leading outside."""
    write_clip(media / "clip.mp4", frames)
    write_clip(media / "long.mp4", frames + 1)
    outside.mkdir(exist_ok=True)
    (outside / "clip.mp4").write_bytes((media / "clip.mp4").read_bytes())
    (outside / "locked").mkdir(exist_ok=True)
    (outside / "locked").chmod(0)
    (outside / "loop.mp4").symlink_to(outside / "loop.mp4")
    root = os.fsencode(media)
    os.symlink(b"loop_b", os.path.join(root, b"loop_a"))
    os.symlink(b"loop_a", os.path.join(root, b"loop_b"))
    (media / "loop.mp4").symlink_to(media / "loop.mp4")
    (media / "dangling.mp4").symlink_to(media / "nothing_here")
    with open(os.path.join(root, b"bad\xff name.mp4"), "wb") as f:
        f.write(b"not a video")
    os.mkdir(os.path.join(root, b"frames\xfe"))
    os.mkfifo(media / "pipe.mp4")
    for name, target in (("to_cwd", "/proc/self/cwd"), ("to_fd", "/proc/self/fd/1")):
        (media / name).symlink_to(target)
    (media / "to_clip").symlink_to(outside / "clip.mp4")
    (media / "to_loop").symlink_to(outside / "loop.mp4")
    os.link(outside / "clip.mp4", media / "hardlink.mp4")


def report(attack: Attack, rss: dict[str, float], metrics_kb: float, scrape_s: float, elapsed: float, http: str) -> int:
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; server {attack.url} (--http {http})"
    )
    total = Tally()
    for surface, t in attack.tallies.items():
        statuses = dict(sorted(t.statuses.items()))
        print(
            f"  {surface:10s} requests {t.requests:6d}  5xx {t.server_errors}  hangs {t.hangs}  resets {t.resets}  {statuses}"
        )
        for note in t.notes:
            print(f"  {'':10s} {note}")
        total.statuses.update(t.statuses)
        total.hangs += t.hangs
        total.resets += t.resets
    print(
        f"  {'all':10s} requests {total.requests:6d}  5xx {total.server_errors}  hangs {total.hangs}  resets {total.resets}  in {elapsed:.0f} s"
    )
    print(f"sessions open at most: {attack.max_sessions_seen:.0f} (cap {CAP})")
    print(f"/metrics after the run: {metrics_kb:.1f} KB, scraped in {scrape_s * 1000:.0f} ms")
    print(
        f"server RSS: start {rss['start']:.0f} MB, baseline {rss['baseline']:.0f} MB, peak {rss['peak']:.0f} MB, "
        f"after {rss['after']:.0f} MB ({rss['after'] - rss['baseline']:+.0f} MB against the baseline)"
    )
    steps = ", ".join(f"{k.removeprefix('after ')} {v:.0f}" for k, v in rss.items() if k.startswith("after "))
    print(f"server RSS after each surface (MB): {steps}")
    failed = total.server_errors or total.hangs or attack.max_sessions_seen > CAP
    return 1 if failed else 0


async def run(attack: Attack, args, rss: dict[str, float]) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=attack.url, limits=limits) as client:
        for surface, attack_it in (
            ("listing", lambda: attack.listing(client, args.listing)),
            ("admission", lambda: attack.admission(client, args.rounds)),
            ("streams", lambda: attack.streams(client, args.send_timeout_s, args.clip_frames)),
            ("methods", lambda: attack.methods(args.methods, concurrency=16)),
            ("paths", lambda: attack.paths(client, args.path_rounds)),
            ("frames", lambda: attack.frames(client, args.frames, args.clip_frames)),
            ("headers", lambda: attack.headers(args.header_rounds)),
        ):
            await attack_it()
            rss[f"after {surface}"] = rss_mb(attack.pid)
        started = time.perf_counter()
        scrape = await client.get("/metrics", timeout=attack.hang_s)
        return len(scrape.content) / 1024, time.perf_counter() - started


async def warm_up(url: str, media: Path, num_frames: int) -> None:
    """Serve the service's normal peak once before the baseline: ``CAP`` sessions propagating a few frames at the
    same time, frames read at several places, the listing. The baseline then holds what any run allocates once
    (the video predictor, decoders, worker threads and their heaps), and RSS growth after the attack is what the
    attack itself left behind."""

    async def session(client: httpx.AsyncClient, sid: str) -> None:
        for path, body in (
            ("/track/start", {"video_path": str(media / "clip.mp4"), "session_id": sid}),
            ("/track/prompt", {"session_id": sid, "frame_idx": 0, "points": [[600, 300]]}),
            ("/track/propagate", {"session_id": sid, "max_frames": 3}),
            ("/track/stop", {"session_id": sid}),
        ):
            (await client.post(path, json=body)).raise_for_status()

    async def frame(client: httpx.AsyncClient, index: int) -> None:
        params = {"video_path": str(media / "clip.mp4"), "frame_idx": index}
        (await client.get("/media/frame", params=params)).raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(
            *(session(client, f"warm{i}") for i in range(CAP)),
            *(frame(client, i * num_frames // 4) for i in range(4)),
            client.get("/media/videos"),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few of each, seconds-long (the quick suite)")
    parser.add_argument("--hang-s", type=float, default=120.0, help="no answer within this long counts as a hang")
    parser.add_argument(
        "--http",
        default="server.http_edge:EdgeHttpProtocol",
        help="uvicorn's --http (default: run_sam.sh's; h11 passes invented methods on to the app)",
    )
    args = parser.parse_args()
    full = dict(listing=50, rounds=20, methods=10_000, path_rounds=5, frames=24, header_rounds=20, clip_frames=60)
    smoke = dict(listing=3, rounds=1, methods=60, path_rounds=1, frames=4, header_rounds=1, clip_frames=20)
    for key, value in (smoke if args.smoke else full).items():
        setattr(args, key, value)
    args.send_timeout_s = 12.0 if args.smoke else 30.0  # the smoke run's is short, the full run's the default
    # The media root is a folder of its own: the server's working directory and log (where /proc/self/cwd and
    # /proc/self/fd/1 lead) lie outside it.
    base = Path(tempfile.mkdtemp(prefix="sam3_attack_"))
    media, outside = base / "media", base / "outside"
    media.mkdir()
    live = start_server(
        base,
        {
            "SAM_MEDIA_ROOTS": str(media),
            "SAM_MAX_SESSIONS": str(CAP),
            "SAM_MAX_VIDEO_FRAMES": str(args.clip_frames),
            "SAM_STREAM_SEND_TIMEOUT_S": str(args.send_timeout_s),
            "SAM_MEDIA_REFUSE_HARDLINKS": "true",
            "SAM3_WARMUP": "false",
        },
        timeout_s=300,
        http=args.http,
    )
    url, process = live.url, live.process
    try:
        prepare_media(media, outside, args.clip_frames)
        rss = {"start": rss_mb(process.pid)}
        asyncio.run(warm_up(url, media, args.clip_frames))
        time.sleep(1)
        rss["baseline"] = rss_mb(process.pid)
        attack = Attack(url, process.pid, media, outside, args.hang_s)
        started = time.monotonic()
        with RssSampler(process.pid) as sampler:
            metrics_kb, scrape_s = asyncio.run(run(attack, args, rss))
        elapsed = time.monotonic() - started
        time.sleep(2)  # the last sessions' memory is given back as they close
        rss["peak"], rss["after"] = max(sampler.peak, rss["baseline"]), rss_mb(process.pid)
        code = report(attack, rss, metrics_kb, scrape_s, elapsed, args.http)
    finally:
        process.terminate()
        process.wait(30)
        (outside / "locked").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
