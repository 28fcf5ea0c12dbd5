"""Profile the typical order-sign call and the engine with pyinstrument (dev extra).

    .venv/bin/python bench/step_profile.py [--calls 300] [--what sign,one,review,phases]

Writes a text call tree per payload to bench/results/profile-<time>-<payload>.txt and prints
the top of each. The order-sign call goes through the Flask test client (CDS_REQUIRE_JWT
off, the audit store in a temporary SQLite file), the same path gunicorn serves.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import payloads  # noqa: E402
from bench.run import RESULTS, SIGN_PATH, _quiet_logs  # noqa: E402


def workloads(workdir: Path) -> dict[str, Callable[[], object]]:
    from service import create_app
    from service.cds.discovery import prefetch_templates
    from service.checker import check_body
    from service.knowledge import load

    kb = load()
    now = datetime.now(UTC)
    one = json.dumps(payloads.one_order_parameters(now))
    review = json.dumps(payloads.review_bundle(now))
    sign = json.dumps(payloads.order_sign_call(now, prefetch_templates(kb))).encode()
    _quiet_logs(workdir)
    app = create_app({"CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": False,
                      "DATABASE_URL": f"sqlite:///{workdir / 'profile.sqlite3'}"})
    client = app.test_client()

    def run_sign() -> object:
        resp = client.post(SIGN_PATH, data=sign, content_type="application/json")
        assert resp.status_code == 200, resp.data[:300]
        return resp

    return {
        "sign": run_sign,
        "one": lambda: check_body(json.loads(one), now, "us", kb),
        "review": lambda: check_body(json.loads(review), now, "us", kb),
    }


PHASES = ("read_json", "parse_call", "gather", "from_hook", "build_request", "run_check",
          "render_cards", "_record", "_json")


def phases(fn: Callable[[], object], calls: int,
           clock: Callable[[], float] | None = None) -> dict[str, float]:
    """Milliseconds per order-sign call spent in each step of the CDS endpoint, timed with
    perf_counter (or ``clock``: bench/cpu_sign.py passes time.process_time) around the
    endpoint module's own functions (no profiler overhead); the rest is Flask, the test
    client, request logging and metrics."""
    import time
    from collections import Counter

    clock = clock or time.perf_counter

    import service.web.cds_hooks as endpoint

    spent: Counter[str] = Counter()
    # the steps the endpoint still has (they move as the package is restructured)
    originals = {name: getattr(endpoint, name) for name in PHASES if hasattr(endpoint, name)}

    def timed(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            t0 = clock()
            try:
                return real(*args, **kwargs)
            finally:
                spent[name] += clock() - t0
        return run

    for name, real in originals.items():
        setattr(endpoint, name, timed(name, real))
    try:
        for _ in range(50):
            fn()
        spent.clear()
        t0 = clock()
        for _ in range(calls):
            fn()
        total = clock() - t0
    finally:
        for name, real in originals.items():
            setattr(endpoint, name, real)
    out = {name.lstrip("_"): round(spent[name] * 1000 / calls, 3) for name in originals}
    out["flask_and_the_rest"] = round((total - sum(spent.values())) * 1000 / calls, 3)
    out["total"] = round(total * 1000 / calls, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    from pyinstrument import Profiler

    parser = argparse.ArgumentParser(description="pyinstrument profiles for the benchmark")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--what", default="phases,sign,one,review")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="baclofen-profile-"))
    loads = workloads(workdir)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in [w.strip() for w in args.what.split(",") if w.strip()]:
        if name == "phases":
            table = phases(loads["sign"], args.calls)
            (RESULTS / f"profile-{stamp}-phases.json").write_text(json.dumps(table, indent=1))
            print("=== order-sign call, ms per call by step (no profiler):")
            print(json.dumps(table, indent=1))
            continue
        fn = loads[name]
        calls = args.calls if name != "review" else max(10, args.calls // 20)
        for _ in range(10):
            fn()  # warm: imports, caches, the store's tables
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for _ in range(calls):
            fn()
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        path = RESULTS / f"profile-{stamp}-{name}.txt"
        path.write_text(f"{name}: {calls} calls\n" + text, encoding="utf-8")
        print(f"=== {name}: {calls} calls -> {path.relative_to(ROOT)}")
        print("\n".join(text.splitlines()[:60]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
