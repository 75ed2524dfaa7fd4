#!/usr/bin/env python3
"""Asynchronous inference with plain `requests`: seed 003's Celery flow (submit, get a
task id, poll for the result) against candle-serving's job API, with no Celery, broker
or worker of your own.

    python async_jobs.py --server http://localhost:8501 --model minilm "first text" "second text"
    python async_jobs.py --model minilm --batch 4 --check "a" "b" "c" "d"   # compare with :predict
    python async_jobs.py --cancel ...   # submit, then cancel before it starts

Celery's `inference.delay(x)` is `POST /v1/models/{m}:predictAsync` (202, a job id);
`AsyncResult(task_id)` is `GET /v1/jobs/{id}` (state PENDING, RUNNING, SUCCEEDED, FAILED or
CANCELLED, and `result` once it SUCCEEDED); `revoke` is `DELETE /v1/jobs/{id}`.
"""
import argparse
import json
import sys
import time

import requests


def submit(server, model, instances):
    """POST :predictAsync; the job id. Refusals (bad input, queue full) are raised."""
    response = requests.post(f"{server}/v1/models/{model}:predictAsync", json={"instances": instances}, timeout=30)
    if response.status_code != 202:
        raise RuntimeError(f"submission refused ({response.status_code}): {response.json()['error']}")
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['job_id']}"
    return job["job_id"]


def poll(server, job_id, timeout=300.0):
    """GET /v1/jobs/{id} until the job ends, backing off from 20 ms to 1 s."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        job = requests.get(f"{server}/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout} s")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="http://localhost:8501")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch", type=int, default=1, help="texts per job")
    parser.add_argument("--check", action="store_true", help="compare every result with :predict's answer")
    parser.add_argument("--cancel", action="store_true", help="cancel each job right after submitting it")
    parser.add_argument("texts", nargs="+")
    args = parser.parse_args()

    batches = [args.texts[i:i + args.batch] for i in range(0, len(args.texts), args.batch)]
    # Submit everything first (Celery's .delay), then collect (AsyncResult).
    jobs = [(batch, submit(args.server, args.model, batch)) for batch in batches]
    print(f"submitted {len(jobs)} jobs")
    if args.cancel:
        for _, job_id in jobs:
            response = requests.delete(f"{args.server}/v1/jobs/{job_id}", timeout=30)
            answer = response.json()
            print(f"cancel {job_id} -> {response.status_code} {answer.get('state', answer.get('error'))}")
        return 0
    failures = 0
    for batch, job_id in jobs:
        job = poll(args.server, job_id)
        spec = job["model_spec"]
        if job["state"] != "SUCCEEDED":
            failures += 1
            print(f"job {job_id}: {job['state']}: {job['error']}")
            continue
        predictions = job["result"]["predictions"]
        print(f"job {job_id}: SUCCEEDED on {spec['name']} version {spec['version']}: {len(predictions)} predictions")
        if args.check:
            direct = requests.post(f"{args.server}/v1/models/{args.model}/versions/{spec['version']}:predict",
                                   json={"instances": batch}, timeout=30).json()
            if direct != job["result"]:
                failures += 1
                print(f"job {job_id}: the result differs from :predict's answer")
            else:
                print(f"job {job_id}: equal to :predict")
    if failures:
        print(f"{failures} jobs failed")
        return 1
    print(json.dumps({"jobs": len(jobs), "failed": 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
