"""The operator console at /console: server-rendered pages over the same stores and roles as
the admin API, with a session cookie, CSRF tokens and a strict Content-Security-Policy."""
