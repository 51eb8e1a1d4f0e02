"""The toppipe dashboard: a Dash app over a :class:`~toppipe.dashboard.source.SiteSource`.

    from toppipe.dashboard.app import make_app
    app = make_app(source, token, poll_interval=3.0, on_action=journal)   # a dash.Dash
    app.server                                                            # its Flask server (token auth in front)

Modules: ``source`` (the interface), ``poller`` (one thread reads the site's
status), ``auth`` (token, cookie), ``actions`` (every action, audited),
``handlers`` (callback bodies), ``callbacks`` (their wiring), ``views`` (pages).
"""
