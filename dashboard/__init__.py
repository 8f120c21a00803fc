"""MaskWatch dashboard: live per-camera compliance in the browser (Socket.IO `/live`) and the REST API (`/api/`).

Start reading here:
    __main__.py   `python -m dashboard`: flags over MW_* settings, Redis, serve until SIGTERM/SIGINT
    app.py        create_app(settings, store) -> (Flask, SocketIO); the Redis message queue for replicas
    live.py       the emitter: mw:updates -> throttled camera_update, violation (episodes), system, to rooms; leader lock
    alerts.py     alert rules evaluated on each system tick (one replica), recorded, pushed; webhook.py sends them
    api.py        REST views; openapi.py describes them; predict.py is the upload check (TF Serving gRPC)
    pages.py      HTML pages: overview, camera, History, Report, check (templates/, static/); server.py the HTTP server
    auth.py       tokens, sessions, rate limits; access.py who a request is and which cameras/zones it sees
    cors.py       which browser origins may call the API and open the socket
    site.py       the site file: name, time zone, alert rules, shifts, access tokens (MW_SITE_FILE / --site)
    settings.py   DashboardSettings (MW_DASHBOARD_*); context.py what views reach through current_app
Browser libraries come from npm (package.json) and are copied to static/vendor by `npm ci`.
"""
