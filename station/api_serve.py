"""``serve``: the local inspection API over HTTP (docs/API.md), for ``station-cli serve`` (the source
tree) and ``station serve`` (the installed app, packaging/station_main.py). Qt-free.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _trusted_keys(args):
    if not getattr(args, "trusted_keys", None):
        return None
    from core.signing import load_trusted_keys

    return load_trusted_keys(args.trusted_keys)


def add_arguments(v: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (``station-cli serve`` and the installed app's ``station serve``)."""
    v.add_argument("--recipe", required=True,
                   help="a recipe version folder, a product folder (its newest usable version), a new product's "
                        "folder or a recipes folder (nothing active until a version is activated), or a product "
                        "of the station's recipe library; calibrations are saved beside it")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this PC only; any other needs the token)")
    v.add_argument("--port", type=int, default=8470)
    v.add_argument("--token-file", metavar="FILE",
                   help="the access token's file (made, readable by you only, when missing; default: api-token in "
                        "the station's config folder, used when bound beyond loopback); given, the token is "
                        "required on loopback too")
    v.add_argument("--store", metavar="DB", help="results store (default: the station's, in its data folder)")
    v.add_argument("--keep", choices=("all", "review_fail", "none"), default="review_fail",
                   help="whose evidence is kept in the station's images folder (REVIEW parts always)")
    v.add_argument("--queue", type=int, default=32,
                   help="parts that may wait for the workers, at most 64 MB of uploads together (beyond: 503)")
    v.add_argument("--upload-limit-mb", type=float, default=10.0, help="largest image upload, MB (default 10)")
    v.add_argument("--trusted-keys", metavar="DIR",
                   help="use only recipes signed by one of the public keys (*.pub) in DIR")
    v.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
    v.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each inference worker (default: the cores shared out among the workers)")
    v.add_argument("--workers", type=int, default=None,
                   help="inference workers judging parts at once (default: 2 with two cores or more, else 1)")


def main(argv: list[str] | None = None) -> int:
    """``station serve ...`` of the installed app (the source tree has ``station-cli serve``)."""
    ap = argparse.ArgumentParser(prog="station serve", description="the local inspection API over HTTP "
                                                                   "(docs/API.md)")
    add_arguments(ap)
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


def serve_recipe(text: str, recipes_root: Path) -> tuple[Path, str | None, int | None]:
    """``--recipe`` of ``serve`` -> (recipes root, product or None, version or None).

    A version folder (``.../widget/v0002``), a product folder (its newest usable version), a product
    folder with no version yet or a recipes folder (no recipe active: calibrate, then activate), or
    a product name of the station's own recipe library."""
    import re

    from core.recipe import MANIFEST, products, versions

    p = Path(text)
    if (p / MANIFEST).is_file():
        m = re.match(r"^v(\d{4,})$", p.name)
        if not m:
            raise SystemExit(f"error: {p} is a recipe, but not in a product's version folder (<product>/vNNNN)")
        return p.parent.parent, p.parent.name, int(m.group(1))
    if p.is_dir():
        if versions(p.parent, p.name):
            return p.parent, p.name, None
        if products(p):
            return p, None, None
        return p.parent, None, None
    if p.exists():
        raise SystemExit(f"error: --recipe {p} is not a folder")
    if len(p.parts) == 1:  # a product name: the station's recipe library
        return recipes_root, (text if versions(recipes_root, text) else None), None
    raise SystemExit(f"error: --recipe {p} was not found")


def run(args) -> int:
    """Serve until Ctrl+C (or SIGTERM); the exit status."""
    from core.recipe import RecipeError
    from core.runtime import tune_for_inference
    from core.store import StoreError
    from core.trainer import TrainConfig
    from station.api import create_app
    from station.api_jobs import CalibrationJobs
    from station.api_service import MB, InspectionService, ServiceConfig
    from station.api_token import TokenError, is_loopback, token_for
    from station.context import StationContext

    try:
        ctx = StationContext(store_path=args.store)
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        root, product, version = serve_recipe(args.recipe, ctx.recipes_root)
        config = ServiceConfig(upload_limit=int(args.upload_limit_mb * MB), queue_size=args.queue,
                               keep_images=args.keep, backend=args.backend, threads=args.threads,
                               workers=getattr(args, "workers", None))
        try:
            trusted = _trusted_keys(args) or ctx.trusted_keys()
            token = token_for(args.host, ctx.config_dir, args.token_file)
        except (TokenError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        tune_for_inference(args.threads)  # this process is the service's: it owns the pools
        service = InspectionService(ctx, root, config, trusted_keys=trusted)
        if product is not None:
            try:
                loaded = service.build(product, version)
            except RecipeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            service.use(loaded)
            print(f"Recipe {loaded.recipe.label} ({loaded.inspector.backend})"
                  + (f"; DEGRADED: {', '.join(f'{m} {w}' for m, w in loaded.unavailable.items())}: no part is "
                     "PASSed" if loaded.degraded else ""), file=sys.stderr)
        else:
            print(f"note: no recipe is active ({root}): calibrate a product (POST /v1/calibrate), then activate it",
                  file=sys.stderr)
        jobs = CalibrationJobs(root, ctx.data_dir / "api-uploads", TrainConfig(threads=args.threads),
                               image_limit=config.upload_limit)
        app = create_app(service, jobs, token)
        if token is not None and token.created:
            print(f"Access token (shown only now; kept in {token.path}, readable by you only): {token.value}")
        if token is not None:
            print(f"Every request but /v1/health needs 'Authorization: Bearer <token>' (token file {token.path}).",
                  file=sys.stderr)
        if not is_loopback(args.host):
            print(f"note: listening on {args.host}, beyond this PC: only clients with the token are served",
                  file=sys.stderr)
        print(f"Serving the inspection API on {args.host}:{args.port} (operations: /docs; Ctrl+C stops)",
              file=sys.stderr, flush=True)
        import uvicorn

        uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                    access_log=bool(args.verbose), lifespan="on")
    finally:
        ctx.close()
    return 0
