"""Ask a vLLM server (started with a zerotuning profile, docs/vllm.md) for a completion.

    python examples/vllm_client.py "The capital of France is" [--port 8000] [--max-tokens 16]

Uses only the standard library: one OpenAI-compatible POST /v1/completions on loopback, greedy.
Prints the completion text; exits 1 with the server's message when the request fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request


def complete(prompt: str, port: int, max_tokens: int, host: str = "127.0.0.1") -> dict:
    base = f"http://{host}:{port}/v1"
    with urllib.request.urlopen(f"{base}/models", timeout=30) as response:
        model = json.load(response)["data"][0]["id"]  # the one model the server serves
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(f"{base}/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        answer = complete(args.prompt, args.port, args.max_tokens)
    except (urllib.error.URLError, OSError) as error:
        print(f"vllm_client: request to 127.0.0.1:{args.port} failed: {error}", file=sys.stderr)
        return 1
    print(answer["choices"][0]["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
