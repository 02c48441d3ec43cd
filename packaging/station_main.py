"""Entry point of the frozen app (the ``station`` executable built by station.spec).

Same as the ``station`` console script, plus one thing only a frozen app has: the demo recipe
pre-built at build time (bundled as ``demo-recipes/``) is copied into the user's recipes folder on
the first start, so the first start inspects within seconds instead of training for a minute and
a half. The station's own first-run training stays in place for every other case.
``station serve ...`` runs the local inspection API without the window (``station-cli serve``'s
options, :mod:`station.api_serve`; ``station-cli`` itself is not shipped).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # offline: before anything can import onnxruntime


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:  # the local inspection API without the window (docs/API.md)
        from station.api_serve import main as serve_main

        return serve_main(argv[1:])
    from station.qt.app import main as station_main, parse_args

    args = parse_args(argv)  # --help and bad options exit here, as they would in station_main
    if not args.self_test:  # the self-test seeds its own temporary folders
        try:
            from station.first_run import install_bundled_demo_recipe

            install_bundled_demo_recipe(args.data_dir, args.config_dir, force_demo=args.demo)
        except Exception as exc:  # noqa: BLE001 - the station trains the demo recipe instead
            print(f"station: the bundled demo recipe was not installed ({exc})", file=sys.stderr)
    return station_main(argv)


if __name__ == "__main__":
    sys.exit(main())
