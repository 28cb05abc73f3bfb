-- wrk script: every request is a new visitor joining (no cookie sent).
wrk.method = "POST"
wrk.headers["Accept"] = "application/json"
