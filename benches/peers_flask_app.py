"""The Flask+PyTorch peer for benches/peers.py, run under gunicorn with sync workers.

POST /embed {"texts": [str, ...]} -> {"embeddings": [[384 floats], ...]} (mean-pooled,
L2-normalised all-MiniLM-L6-v2). GET /health -> {"status": "ok", "pid": worker pid}.
Each worker imports this module after the fork and loads its own model, with one torch thread.
"""

import os

from flask import Flask, jsonify, request

from peers import TorchRuntime  # benches/ is the working folder (gunicorn --chdir)

runtime = TorchRuntime(threads=1)
app = Flask(__name__)


@app.post("/embed")
def embed():
    body = request.get_json(silent=True)
    texts = body.get("texts") if isinstance(body, dict) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return jsonify(error='expected {"texts": [string, ...]}'), 400
    return jsonify(embeddings=runtime.embed(texts).tolist())


@app.get("/health")
def health():
    return jsonify(status="ok", pid=os.getpid())
