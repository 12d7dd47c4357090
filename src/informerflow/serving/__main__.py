"""``python -m informerflow.serving``: serve one model until SIGINT/SIGTERM.

Exit codes follow ``informerflow.errors.EXIT_CODES``: 2 for an invalid setting, 3 when the model
cannot be loaded (missing, or its files fail the sha256 check), 4 when the address cannot be
bound.
"""

from __future__ import annotations

import argparse
import logging
import sys

from informerflow.errors import InformerflowError, exit_code
from informerflow.serving.endpoints import bind_listener

log = logging.getLogger("informerflow.serving")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m informerflow.serving",
        description="Serve an informerflow model over KServe V1/V2 and MLflow's /invocations.",
        allow_abbrev=False,
    )
    parser.add_argument("--model-uri", required=True,
                        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/... or a local dir")
    parser.add_argument("--name", default=None,
                        help="model name in the routes (default: the registered name)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 opens the server to the network")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default=None,
                        help="require 'Authorization: Bearer TOKEN' (default: $INFORMERFLOW_TOKEN)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI or the "
                             "state dir's SQLite store)")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="most windows forecast in one model call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long a window waits for others to share its model call")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: min(2, CPU cores // 2), at least 1)")
    parser.add_argument("--prediction-log", default=None,
                        help="SQLite file every answered forecast is appended to (default: "
                             "predictions.db in the state dir; 'off' disables it)")
    parser.add_argument("--log-wait-ms", type=float, default=250.0,
                        help="longest a request waits for its prediction-log write")
    return parser.parse_args(argv)


def _import_serve():
    # KServe parses sys.argv when its model_server module is imported; it must not see ours.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        from informerflow.serving.server import serve
    finally:
        sys.argv = saved
    return serve


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        # Bound before the heavy imports and the model load, so a taken port fails at once.
        sock = bind_listener(args.host, args.port)
        serve = _import_serve()
        serve(
            args.model_uri,
            host=args.host,
            port=args.port,
            token=args.token,  # serve() falls back to $INFORMERFLOW_TOKEN
            tracking_uri=args.tracking_uri,
            name=args.name,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            threads=args.threads,
            sock=sock,
            prediction_log=args.prediction_log,
            log_wait_ms=args.log_wait_ms,
        )
    except InformerflowError as exc:
        log.error("%s", exc)
        return exit_code(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
