#!/usr/bin/env python3
"""Speed of the Python peers of candle_model_server on all-MiniLM-L6-v2.

  inprocess: PyTorch (2 threads) and onnxruntime (2 intra-op threads) tokenise, encode, mean-pool
             and L2-normalise short.txt and long.txt in batches of 1, 8 and 32; sentences/s.
  server:    Flask under gunicorn (2 sync workers x 1 thread, PyTorch with 1 thread each) serving
             POST /embed, driven by a closed-loop client (Python threads, one http.client
             connection each, at concurrency 1, 8, 32 and 64), one short sentence per request;
             requests/s, p50 and p99 latency, errors. Gunicorn's sync workers close the
             connection after every response, so each request opens a new one, as any client
             of such a server does.

Run through scripts/bench_peers.sh, which sets up the venv. Results go to stdout as Markdown
tables and, with --json PATH, to a JSON file. Progress goes to stderr.
"""

import argparse
import datetime
import http.client
import itertools
import json
import math
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "model_repo" / "minilm" / "1"
DATA_DIR = REPO / "data" / "bench"
CACHE_DIR = REPO / ".cache" / "peers"
REFERENCE = REPO / "tests" / "data" / "minilm_embeddings.json"  # scripts/make_reference.sh
MAX_TOKENS = 256  # truncation; padding is to the longest sentence of each batch
ONNX_OPSET = 17
FILES = ("short", "long")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never try to reach a model hub


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def read_sentences(name, data_dir=DATA_DIR):
    with open(Path(data_dir) / f"{name}.txt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


# ---------------------------------------------------------------- model code shared by all peers


def load_tokenizer():
    """The model's own fast tokenizer, padding to the batch's longest, truncating at 256."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # no length: batch-longest
    return tok


def tokenize(tok, texts):
    """(input_ids, attention_mask, token_type_ids) as int64 arrays of shape [batch, seq]."""
    encs = tok.encode_batch(texts)
    ids = np.array([e.ids for e in encs], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
    types = np.array([e.type_ids for e in encs], dtype=np.int64)
    return ids, mask, types


def pool_normalize(hidden, mask):
    """Mean over the tokens the mask keeps, then L2 normalisation (sentence-transformers)."""
    m = mask[:, :, None].astype(hidden.dtype)
    mean = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def load_torch_bert(attn="sdpa"):
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(MODEL_DIR), attn_implementation=attn)
    return model.eval()


class TorchRuntime:
    name = "torch"

    def __init__(self, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.threads = threads
        self.tok = load_tokenizer()
        self.model = load_torch_bert()

    def hidden(self, texts):
        torch = self.torch
        ids, mask, types = tokenize(self.tok, texts)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                token_type_ids=torch.from_numpy(types),
            ).last_hidden_state
        return out, mask

    def embed(self, texts):
        # Pooling in torch, as a PyTorch user (sentence-transformers) would do it.
        torch = self.torch
        hidden, mask = self.hidden(texts)
        with torch.inference_mode():
            m = torch.from_numpy(mask).unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()


def onnx_path():
    import torch

    version = torch.__version__.split("+")[0]
    return CACHE_DIR / f"minilm-fp32-opset{ONNX_OPSET}-torch{version}.onnx"


def export_onnx(path):
    """fp32 ONNX export of the encoder (dynamic batch and sequence), written atomically."""
    import torch

    # Eager attention exports as plain MatMul/Softmax ops; ORT's session optimizer then fuses
    # the bias and GELU ops into the MatMuls (not the attention itself).
    model = load_torch_bert(attn="eager")

    class Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = tokenize(load_tokenizer(), ["a short one", "a second sentence, a little longer than that"])
    args = tuple(torch.from_numpy(a) for a in sample)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    log(f"exporting ONNX to {path} ...")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on this graph are known and harmless
        torch.onnx.export(
            Encoder(model).eval(),
            args,
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: one self-contained fp32 file
        )
    os.replace(tmp, path)


class OrtRuntime:
    name = "onnxruntime"

    def __init__(self, threads):
        import onnxruntime as ort

        path = onnx_path()
        if not path.exists():
            export_onnx(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.threads = threads
        self.path = path
        self.tok = load_tokenizer()

    def hidden(self, texts):
        ids, mask, types = tokenize(self.tok, texts)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(["last_hidden_state"], feed)[0], mask

    def embed(self, texts):
        return pool_normalize(*self.hidden(texts))


# --------------------------------------------------- CPU used by other programs (shared machine)


def _busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user .. steal, all cores
    return sum(v) - v[3] - v[4], sum(v)  # (busy, total); idle and iowait are not busy


def _own_jiffies(pgid):
    """CPU time of this process (all threads, and its children that ended: a --beside cell)
    plus, if given, every process of group pgid."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(name) == os.getpid():
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        elif pgid is not None and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


class OtherCpu:
    """Share of all cores that other programs used while the block ran (0 = we had them all).

    A shared 2-core machine (a build next door) makes every figure meaningless, so each cell
    records this and the run warns about any cell above 10%.
    """

    def __init__(self, pgid=None):
        self.pgid = pgid
        self.share = 0.0

    def __enter__(self):
        self.start = (*_busy_jiffies(), _own_jiffies(self.pgid))
        return self

    def __exit__(self, *exc):
        busy, total = _busy_jiffies()
        own = _own_jiffies(self.pgid)
        other = (busy - self.start[0]) - (own - self.start[2])
        self.share = max(0.0, other / max(total - self.start[1], 1))


def wait_idle(max_wait, pgid=None):
    """Wait (up to max_wait s) for one second in which other programs use under 10% of the CPUs."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        with OtherCpu(pgid) as probe:
            time.sleep(1.0)
        if probe.share < 0.10:
            return
        log(f"  waiting: other programs use {probe.share:.0%} of the CPUs")


def measured_cell(args, fn, pgid=None):
    """fn() and the CPU share other programs took meanwhile. With --wait-idle, waits for idle
    CPUs first and measures a disturbed cell again (3 tries at most)."""
    for attempt in range(3 if args.wait_idle else 1):
        if attempt:
            log("  disturbed by other programs: measuring again")
        wait_idle(args.wait_idle, pgid)
        with OtherCpu(pgid) as other:
            value = fn()
        if other.share <= 0.10:
            break
    return value, other.share


# ---------------------------------------------------------------------------- in-process mode


def batches_in_order(sentences, size):
    """The distinct batches met when cycling through the file in order, `size` at a time."""
    n = len(sentences)
    count = n // math.gcd(n, size)
    return [[sentences[(k * size + j) % n] for j in range(size)] for k in range(count)]


def measure(embed, batches, seconds, warmup):
    """Sentences/s of `embed` over `batches` (cycled) for `seconds`, after `warmup` seconds."""
    cycle = itertools.cycle(batches)
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        embed(next(cycle))
    done, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        batch = next(cycle)
        embed(batch)
        done += len(batch)
        now = time.perf_counter()
        if now >= end:
            return done / (now - start)


def agreement(torch_rt, ort_rt, data):
    """Compare torch and onnxruntime: hidden states and final embeddings of every sentence."""
    min_cos, max_diff = 1.0, 0.0
    for name in FILES:
        for batch in batches_in_order(data[name], 32):
            ht, mask = torch_rt.hidden(batch)
            ho, _ = ort_rt.hidden(batch)
            keep = mask.astype(bool)  # padded positions are not compared
            max_diff = max(max_diff, float(np.abs(ht.numpy()[keep] - ho[keep]).max()))
            cos = (torch_rt.embed(batch) * ort_rt.embed(batch)).sum(axis=1)
            min_cos = min(min_cos, float(cos.min()))
    return {
        "check": "torch_vs_onnxruntime",
        "sentences": sum(len(data[f]) for f in FILES),
        "min_cosine": min_cos,
        "max_abs_diff_hidden": max_diff,
        "ok": min_cos > 0.999,
    }


def reference_check(runtimes):
    """Each runtime against sentence-transformers' own outputs (first 8 values and sum)."""
    if not REFERENCE.exists():
        return None
    ref = json.loads(REFERENCE.read_text())
    out = {"check": "reference_sentence_transformers", "cases": len(ref["cases"])}
    for rt in runtimes:
        worst = 0.0
        for case in ref["cases"]:
            emb = rt.embed([case["text"]])[0]
            worst = max(worst, float(np.abs(emb[:8] - np.array(case["first8"])).max()),
                        abs(float(emb.sum()) - case["sum"]) / 10)  # sum of 384 values: looser
        out[f"{rt.name}_max_diff"] = worst
    out["ok"] = all(v < 1e-4 for k, v in out.items() if k.endswith("_max_diff"))
    return out


def beside_cell(cmd, name, size, seconds, threads):
    """One cell of a program measured beside the peers (--beside): it is run as
    `CMD --file NAME --batch SIZE --seconds S --json PATH` with RAYON_NUM_THREADS=threads and
    writes a JSON list whose first entry has sentences_per_s. Its other output lines that are
    not table rows (an accuracy line, say) are returned to be shown once."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cell.json"
        argv = shlex.split(cmd) + ["--file", name, "--batch", str(size),
                                   "--seconds", str(seconds), "--json", str(out)]
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        run = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
        if run.returncode != 0:
            sys.exit(f"--beside {cmd!r} failed ({run.returncode}):\n{run.stderr[-2000:]}")
        notes = [line for line in run.stdout.splitlines() if line and not line.startswith("|")]
        return json.loads(out.read_text())[0]["sentences_per_s"], notes


def median_of_rounds(results):
    """One result per (runtime, file, batch): the median rate of its rounds, which are kept."""
    cells = {}
    for r in results:
        cells.setdefault((r["runtime"], r["file"], r["batch"]), []).append(r)
    merged = []
    for rounds in cells.values():
        median = statistics.median(r["sentences_per_s"] for r in rounds)
        merged.append(dict(rounds[0], sentences_per_s=round(median, 1),
                           rounds=[r["sentences_per_s"] for r in rounds],
                           other_cpu=max(r["other_cpu"] for r in rounds)))
    return merged


def run_inprocess(args, data):
    """Every cell, round after round: within a round each (file, batch) is measured on every
    runtime one after the other (the order reversed every other round), so that a change of
    the host's speed (a shared or throttled CPU) falls on all of them alike; the figure of a
    cell is the median of its rounds."""
    runtimes = []
    for cls in (TorchRuntime, OrtRuntime):
        log(f"loading {cls.name} ({args.threads} threads)...")
        runtimes.append(cls(args.threads))
    beside = [spec.split("=", 1) for spec in args.beside]
    results, shown = [], set()
    for round_ in range(args.rounds):
        if args.rounds > 1:
            log(f"round {round_ + 1} of {args.rounds}")
        for name in FILES:
            for size in args.batches:
                batches = batches_in_order(data[name], size)
                order = [("peer", rt) for rt in runtimes] + [("beside", b) for b in beside]
                if round_ % 2:
                    order.reverse()
                for kind, who in order:
                    if kind == "peer":
                        rt = who
                        label, threads = rt.name, rt.threads
                        sps, other = measured_cell(
                            args, lambda: measure(rt.embed, batches, args.seconds, args.warmup))
                    else:
                        label, cmd = who
                        threads = args.threads
                        (sps, notes), other = measured_cell(
                            args, lambda: beside_cell(cmd, name, size, args.seconds, threads))
                        for note in notes:
                            if (label, note) not in shown:
                                shown.add((label, note))
                                log(f"  {label}: {note}")
                    log(f"  {label:20} {name:5} bs{size:<3} {sps:8.1f} sentences/s"
                        f"  (other programs: {other:.0%} CPU)")
                    results.append({
                        "runtime": label, "threads": threads, "file": name, "batch": size,
                        "seconds": args.seconds, "sentences_per_s": round(sps, 1),
                        "other_cpu": round(other, 3),
                    })
    if args.rounds > 1:
        results = median_of_rounds(results)
    check = agreement(*runtimes, data)
    check["onnx_file"] = str(runtimes[1].path.relative_to(REPO))
    log(f"  torch vs onnxruntime: min cosine {check['min_cosine']:.6f}, "
        f"max |diff| of hidden states {check['max_abs_diff_hidden']:.2e}")
    checks = [check]
    ref = reference_check(runtimes)
    if ref:
        log(f"  vs sentence-transformers reference: torch {ref['torch_max_diff']:.1e}, "
            f"onnxruntime {ref['onnxruntime_max_diff']:.1e}")
        checks.append(ref)
    return results, checks


# ---------------------------------------------------------------------------------- server mode


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port, method, path, body=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, data, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


class Gunicorn:
    """gunicorn serving benches/peers_flask_app.py on a free loopback port; always stopped."""

    def __init__(self, workers):
        self.workers = workers
        self.port = free_port()
        self.log_path = CACHE_DIR / "gunicorn.log"
        self.proc = None

    def __enter__(self):
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        cmd = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(self.workers), "--threads", "1", "--worker-class", "sync",
            "--bind", f"127.0.0.1:{self.port}", "--chdir", str(REPO / "benches"),
            "--timeout", "120", "--log-level", "warning", "--error-logfile", str(self.log_path),
            "peers_flask_app:app",
        ]
        # Own process group, so that stopping it reaches the workers too and nothing else.
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_ready(timeout=180)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout):
        """Until every worker has loaded the model: /health names the pid that answered."""
        pids, deadline = set(), time.monotonic() + timeout
        while len(pids) < self.workers:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready after {timeout} s; see {self.log_path}")
            try:
                status, body = http_json(self.port, "GET", "/health", timeout=2)
                if status == 200:
                    pids.add(body["pid"])
            except OSError:
                pass
            time.sleep(0.1)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the master stops its workers gracefully
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __exit__(self, *exc):
        self.stop()


def closed_loop(port, sentences, concurrency, seconds, warmup):
    """`concurrency` clients, each sending its next request as soon as the last one answered.

    Requests completed in the window [warmup, warmup + seconds] are counted; the sentence of each
    request is the next one of the file, shared across clients.
    """
    bodies = [json.dumps({"texts": [s]}).encode() for s in sentences]
    headers = {"Content-Type": "application/json"}
    counter = itertools.count()  # next() on it is atomic under the GIL
    start_gate = threading.Barrier(concurrency + 1)
    lats = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    times = {}

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start_gate.wait()
        t_measure, t_end = times["measure"], times["end"]
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            ok = False
            try:
                conn.request("POST", "/embed", bodies[next(counter) % len(bodies)], headers)
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and len(json.loads(data)["embeddings"][0]) == 384
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError):
                conn.close()  # reconnects on the next request
            t1 = time.perf_counter()
            if t_measure <= t1 <= t_end:
                if ok:
                    lats[i].append(t1 - t0)
                else:
                    errors[i] += 1
            if not ok:
                time.sleep(0.05)  # no busy loop against a dead server
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    times["measure"] = now + warmup
    times["end"] = now + warmup + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    lat = np.array([x for per in lats for x in per]) * 1000.0
    p50, p99 = (np.percentile(lat, [50, 99]) if len(lat) else (float("nan"),) * 2)
    return {
        "requests": int(len(lat)),
        "rps": round(len(lat) / seconds, 1),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "errors": int(sum(errors)),
    }


def run_server(args, data):
    results = []
    log(f"starting gunicorn ({args.workers} sync workers x 1 thread, torch 1 thread each)...")
    with Gunicorn(args.workers) as server:
        # The server must give what the in-process PyTorch gives.
        status, body = http_json(server.port, "POST", "/embed", {"texts": data["short"][:2]}, timeout=60)
        emb = np.array(body["embeddings"], dtype=np.float32)
        ref = TorchRuntime(1).embed(data["short"][:2])
        cos = float((emb * ref).sum(axis=1).min())
        log(f"  server on 127.0.0.1:{server.port}: status {status}, cosine to in-process torch {cos:.6f}")
        if status != 200 or cos < 0.999:
            raise RuntimeError("the Flask server's embeddings disagree with in-process torch")
        for c in args.concurrency:
            r, other = measured_cell(
                args, lambda: closed_loop(server.port, data["short"], c, args.seconds, args.warmup),
                server.proc.pid)
            r["other_cpu"] = round(other, 3)
            log(f"  flask-gunicorn-torch c={c:<3} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.1f} ms"
                f"  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  (other programs: {other:.0%} CPU)")
            results.append({
                "server": "flask-gunicorn-torch", "workers": args.workers, "threads_per_worker": 1,
                "torch_threads": 1, "file": "short", "sentences_per_request": 1,
                "concurrency": c, "seconds": args.seconds, **r,
            })
    return results


# ------------------------------------------------------------------------------------- output


def versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "onnxruntime", "onnx", "transformers", "tokenizers", "numpy", "flask", "gunicorn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def mark(result):
    return "\\*" if result["other_cpu"] > 0.10 else ""


def markdown(inproc, checks, server):
    lines = []
    if inproc:
        cols = sorted({(r["file"], r["batch"]) for r in inproc}, key=lambda k: (FILES.index(k[0]), k[1]))
        lines.append("In process, tokenise + encode + mean-pool + normalise, sentences/s")
        lines.append("")
        lines.append("| runtime | threads | " + " | ".join(f"{f} bs{b}" for f, b in cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for rt in dict.fromkeys(r["runtime"] for r in inproc):
            cell = {(r["file"], r["batch"]): r for r in inproc if r["runtime"] == rt}
            threads = next(iter(cell.values()))["threads"]
            vals = " | ".join(f"{cell[k]['sentences_per_s']:.0f}{mark(cell[k])}" if k in cell else ""
                              for k in cols)
            lines.append(f"| {rt} | {threads} | {vals} |")
        for c in checks:
            verdict = "ok" if c["ok"] else "FAILED"
            lines.append("")
            if c["check"] == "torch_vs_onnxruntime":
                lines.append(f"torch vs onnxruntime on {c['sentences']} sentences: min cosine "
                             f"{c['min_cosine']:.6f}, max |diff| of hidden states "
                             f"{c['max_abs_diff_hidden']:.2e} ({verdict})")
            else:
                lines.append(f"vs sentence-transformers reference ({c['cases']} sentences): max |diff| "
                             f"torch {c['torch_max_diff']:.1e}, onnxruntime "
                             f"{c['onnxruntime_max_diff']:.1e} ({verdict})")
    if server:
        if lines:
            lines.append("")
        lines.append("Server, one short sentence per request, closed loop")
        lines.append("")
        lines.append("| server | workers x threads | concurrency | requests/s | p50 ms | p99 ms | errors |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in server:
            lines.append(f"| {r['server']} | {r['workers']} x {r['threads_per_worker']} | {r['concurrency']} "
                         f"| {r['rps']:.0f}{mark(r)} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    if any(mark(r) for r in inproc + server):
        lines.append("")
        lines.append("\\* other programs used over 10% of the CPUs during this cell: the figure is low")
    return "\n".join(lines)


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("inprocess", "server"), help="run only one of the two modes")
    p.add_argument("--seconds", type=float,
                   help="measured seconds per cell (default 5 in process, 6 per server concurrency)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each cell")
    p.add_argument("--json", metavar="PATH", help="also write all results to this JSON file")
    p.add_argument("--threads", type=int, default=2, help="in-process threads (default 2)")
    p.add_argument("--batches", type=int_list, default=[1, 8, 32], help="in-process batch sizes")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument("--concurrency", type=int_list, default=[1, 8, 32, 64], help="server concurrency levels")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each cell, wait up to this long for other programs to leave the CPUs, "
                        "and measure a cell they disturbed again (default 0: off)")
    p.add_argument("--data", default=str(DATA_DIR), help="folder with short.txt and long.txt")
    p.add_argument("--rounds", type=int, default=1,
                   help="in process: measure every cell this many times, round after round, and "
                        "report each cell's median (default 1)")
    p.add_argument("--beside", action="append", default=[], metavar="NAME=COMMAND",
                   help="in process: also measure COMMAND in the same rounds, cell by cell next to "
                        "the peers, as runtime NAME (see beside_cell); repeatable")
    args = p.parse_args()

    # SIGTERM unwinds like Ctrl-C, so gunicorn is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data = {name: read_sentences(name, args.data) for name in FILES}
    seconds = args.seconds
    inproc, checks, server = [], [], []
    if args.only in (None, "inprocess"):
        args.seconds = seconds or 5.0
        inproc, checks = run_inprocess(args, data)
    if args.only in (None, "server"):
        args.seconds = seconds or 6.0
        server = run_server(args, data)

    report = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "versions": versions(),
            "other_cpu_note": "other_cpu: share of all cores used by other programs during a cell",
            "max_tokens": MAX_TOKENS, "padding": "batch-longest", "warmup_s": args.warmup,
            "sentences": {name: len(data[name]) for name in FILES},
            "load_generator": "closed loop, python threads, one http.client connection per client "
                              "(reopened per request: gunicorn sync workers close it)",
        },
        "results": inproc + server,
        "checks": checks,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log(f"results written to {args.json}")
    print(markdown(inproc, checks, server))
    busy = [r for r in inproc + server if r["other_cpu"] > 0.10]
    if busy:
        log(f"warning: other programs used over 10% of the CPUs in {len(busy)} of "
            f"{len(inproc + server)} cells (other_cpu in the JSON); those figures are low")
    failed = [c["check"] for c in checks if not c["ok"]]
    if failed:
        sys.exit(f"failed checks: {', '.join(failed)}")


if __name__ == "__main__":
    main()
