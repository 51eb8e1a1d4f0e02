"""``python -m toppipe.dashboard --site NAME --bind ADDR --port PORT``: the site dashboard,
as ``up`` starts it on the client, served by waitress (:mod:`toppipe.dashboard.server`).
The token is read from the file named by ``TOPPIPE_DASHBOARD_TOKEN_FILE`` (never from the
command line, where ``ps`` shows it)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toppipe.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between two looks at the site (the poller)")
    args = parser.parse_args(argv)
    token_file = os.environ.get("TOPPIPE_DASHBOARD_TOKEN_FILE")
    if not token_file or not os.path.isfile(token_file):
        print("dashboard: set TOPPIPE_DASHBOARD_TOKEN_FILE to the site's token file (python -m deploy up makes it)", file=sys.stderr)
        return 2
    with open(token_file) as handle:
        token = handle.read().strip()

    from toppipe.dashboard.app import make_app
    from toppipe.dashboard.server import ServerError, serve
    from toppipe.dashboard.site import RealSite

    logging.basicConfig(level=logging.WARNING, format="dashboard: %(levelname)s %(name)s: %(message)s")
    app = make_app(RealSite(args.site), token, poll_interval=args.poll)
    try:
        serve(app.server, args.bind, args.port)
    except ServerError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
