#!/usr/bin/env python3
"""Calls through ingest -> NATS JetStream -> worker -> events, against one `serve` process
(role all, its events to the same kind of broker) on the same calls, in the same run.

Two measurements, each for `single` (one process) and `relay` (an ingest and W workers):
- throughput: N calls played as fast as the engine takes them; calls per second and seconds
  of audio per second, from the moment the process that takes the calls listens to the moment
  the last call's summary is in VISHGUARD_EVENTS;
- alert latency: calls played at real speed; for each alert, the wall-clock time it was raised
  (`wall_time`) minus the moment the call began (the ULID in its call id, made when the file
  source opened the call) minus the end of its evidence in audio time (`end_s`). In relay mode
  that includes the ingest's publish, the broker and the worker's replay; the difference of the
  two is what the broker costs per alert.

Prints one table, the relay/single ratios last. A fresh nats-server (JetStream, its own store)
per run. Usage:
    benches/relay.py [--binary target/release/vishguard] [--model tiny.en] [--calls 8]
                     [--workers 1] [--nats-server /usr/sbin/nats-server]
"""

import argparse
import datetime
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "audio-samples"
# The samples tiny.en flags live, and legitimate ones.
SCAMS = ["en_scam_grandson", "en_scam_safe_account", "en_scam_tech_support"]
LEGIT = ["en_legit_delivery", "en_legit_pharmacy", "en_legit_police_outreach", "en_legit_bank_fraud_check"]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ulid_ms(call_id):
    """The creation time (ms since the epoch) of the ULID that ends a call id."""
    ms = 0
    for c in call_id[-26:][:10]:
        ms = ms * 32 + CROCKFORD.index(c)
    return ms


def audio_seconds(path):
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


class Proc:
    """A child that prints `listening on` when ready; its stderr is drained."""

    def __init__(self, args, cwd):
        self.p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        ready = threading.Event()

        def drain():
            for line in self.p.stderr:
                self.lines.append(line)
                if "listening on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(120) or self.p.poll() is not None:
            raise SystemExit("did not start: " + " ".join(args) + "\n" + "".join(self.lines[-20:]))
        self.ready_at = time.time()

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Broker:
    def __init__(self, server, store):
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.p = subprocess.Popen([server, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(store)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("nats-server did not start")
                time.sleep(0.05)

    def stop(self):
        self.p.kill()
        self.p.wait()


def events(binary, url):
    out = subprocess.run([binary, "alerts", "tail", "--nats", url], capture_output=True, text=True)
    return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]


def wait_ended(binary, url, n, timeout):
    deadline = time.time() + timeout
    while True:
        ev = events(binary, url)
        if sum(e["event"] == "call_ended" for e in ev) >= n:
            return ev, time.time()
        if time.time() > deadline:
            raise SystemExit(f"only {sum(e['event'] == 'call_ended' for e in ev)} of {n} calls ended in {timeout} s")
        time.sleep(0.25)


def sources(files, realtime):
    return "".join(
        f'\n[[sources]]\ntype = "file"\nrealtime = {"true" if realtime else "false"}\npath = "{SAMPLES / (f + ".wav")}"\n'
        for f in files)


def run(mode, args, files, realtime, work):
    """One run: the events and the seconds from ready to the last summary stored."""
    work.mkdir(parents=True)
    broker = Broker(args.nats_server, work / "store")
    common = ["--http", "127.0.0.1:0", "--model", args.model]
    procs = []
    try:
        if mode == "single":
            (work / "all.toml").write_text(sources(files, realtime))
            taker = Proc([args.binary, "serve", "--config", "all.toml", "--nats", broker.url,
                          "--nats-outbox", "outbox"] + common, work)
            procs.append(taker)
        else:
            for i in range(args.workers):
                d = work / f"w{i}"
                d.mkdir()
                (d / "w.toml").write_text(f"[nats]\nworker_max_calls = {len(files)}\n")
                procs.append(Proc([args.binary, "serve", "--config", "w.toml", "--role", "worker",
                                   "--nats", broker.url] + common, d))
            (work / "ingest.toml").write_text(sources(files, realtime))
            taker = Proc([args.binary, "serve", "--config", "ingest.toml", "--role", "ingest",
                          "--nats", broker.url, "--http", "127.0.0.1:0"], work)
            procs.append(taker)
        ev, done = wait_ended(args.binary, broker.url, len(files), 600)
        return ev, done - taker.ready_at
    finally:
        for p in procs:
            p.stop()
        broker.stop()


def latencies(ev):
    out = []
    for e in ev:
        if e["event"] != "alert":
            continue
        raised = datetime.datetime.fromisoformat(e["wall_time"].replace("Z", "+00:00")).timestamp()
        out.append(raised - ulid_ms(e["call_id"]) / 1000 - e["end_s"])
    return sorted(out)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target/release/vishguard"))
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--calls", type=int, default=8, help="calls in the throughput runs")
    ap.add_argument("--live-calls", type=int, default=3, help="real-speed calls in the latency runs")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--nats-server", default=shutil.which("nats-server") or "/usr/sbin/nats-server")
    args = ap.parse_args()
    pool = SCAMS + LEGIT
    files = [pool[i % len(pool)] for i in range(args.calls)]
    live = [SCAMS[i % len(SCAMS)] for i in range(args.live_calls)]
    audio = sum(audio_seconds(SAMPLES / (f + ".wav")) for f in files)
    load = os.getloadavg()[0]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ["single", "relay"]:
            ev, wall = run(mode, args, files, False, pathlib.Path(tmp) / f"{mode}-fast")
            alerts = sum(e["event"] == "alert" for e in ev)
            dropped = sum(e["stream"]["dropped_utterances"] for e in ev if e["event"] == "call_ended")
            ev_live, _ = run(mode, args, live, True, pathlib.Path(tmp) / f"{mode}-live")
            lat = latencies(ev_live)
            rows[mode] = dict(wall=wall, cps=len(files) / wall, xrt=audio / wall, alerts=alerts, dropped=dropped,
                              p50=pct(lat, 50), p95=pct(lat, 95), n=len(lat))
    print(f"\n{args.model}, {args.calls} calls ({audio:.0f} s of audio) as fast as taken; "
          f"{args.live_calls} calls at real speed; relay: 1 ingest + {args.workers} worker(s); "
          f"load average before: {load:.2f}, {os.cpu_count()} cores")
    print(f"{'mode':8} {'wall s':>7} {'calls/s':>8} {'audio x':>8} {'alerts':>7} {'dropped':>7} "
          f"{'lat p50':>8} {'lat p95':>8} {'n':>3}")
    for mode, r in rows.items():
        print(f"{mode:8} {r['wall']:7.1f} {r['cps']:8.3f} {r['xrt']:8.2f} {r['alerts']:7d} {r['dropped']:7d} "
              f"{r['p50']:8.2f} {r['p95']:8.2f} {r['n']:3d}")
    s, r = rows["single"], rows["relay"]
    print(f"relay/single: throughput {r['cps'] / s['cps']:.2f}x, alert latency p50 "
          f"{r['p50'] - s['p50']:+.2f} s, p95 {r['p95'] - s['p95']:+.2f} s")


if __name__ == "__main__":
    sys.exit(main())
