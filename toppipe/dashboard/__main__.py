"""``python -m toppipe.dashboard --site NAME --bind ADDR --port PORT``: the site dashboard,
as ``up`` starts it on the client. The token is read from the file named by
``TOPPIPE_DASHBOARD_TOKEN_FILE`` (never from the command line, where ``ps`` shows it)."""

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
    from toppipe.dashboard.site import RealSite

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no request lines (a login URL holds the token)
    app = make_app(RealSite(args.site), token, poll_interval=args.poll)
    app.run(host=args.bind, port=args.port, debug=False, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
